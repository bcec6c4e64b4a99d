ALTER TABLE `shadow_evals` ADD `line` text;--> statement-breakpoint
ALTER TABLE `shadow_evals` ADD `release_seq` integer;--> statement-breakpoint
CREATE INDEX `shadow_evals_release_idx` ON `shadow_evals` (`release_seq`);