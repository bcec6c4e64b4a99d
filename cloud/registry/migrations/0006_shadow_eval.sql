CREATE TABLE `shadow_evals` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`round_id` text NOT NULL,
	`model` text NOT NULL,
	`scope` text NOT NULL,
	`device_id` text,
	`cohort` text,
	`samples` integer NOT NULL,
	`judged_by` text,
	`running_seq` integer,
	`candidate_accuracy` real,
	`running_accuracy` real,
	`agreement` real,
	`delta` real,
	`delta_low` real,
	`delta_high` real,
	`created_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL
);
--> statement-breakpoint
CREATE INDEX `shadow_evals_round_idx` ON `shadow_evals` (`round_id`,`scope`);--> statement-breakpoint
ALTER TABLE `rollouts` ADD `agreement_margin` real DEFAULT 0.01 NOT NULL;