ALTER TABLE `rollouts` ADD `kind` text DEFAULT 'model' NOT NULL;--> statement-breakpoint
ALTER TABLE `rollouts` ADD `agreement_margin` real DEFAULT 0.01 NOT NULL;