CREATE TABLE `shadow_devices` (
	`run_id` text NOT NULL,
	`device_id` text NOT NULL,
	`state` text NOT NULL,
	`reason` text,
	`requests` integer DEFAULT 0 NOT NULL,
	`agreements` integer DEFAULT 0 NOT NULL,
	`skipped` integer DEFAULT 0 NOT NULL,
	`latency_p50_ms` real,
	`latency_p95_ms` real,
	`reported_at` text,
	`updated_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL,
	FOREIGN KEY (`run_id`) REFERENCES `shadow_runs`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE UNIQUE INDEX `shadow_devices_pk` ON `shadow_devices` (`run_id`,`device_id`);--> statement-breakpoint
CREATE INDEX `shadow_devices_device_idx` ON `shadow_devices` (`device_id`);--> statement-breakpoint
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
CREATE TABLE `shadow_runs` (
	`id` text PRIMARY KEY NOT NULL,
	`model` text NOT NULL,
	`release_seq` integer NOT NULL,
	`shadow_seq` integer NOT NULL,
	`signed` text NOT NULL,
	`target` text NOT NULL,
	`policy` text NOT NULL,
	`until` text NOT NULL,
	`auto_switch` integer NOT NULL,
	`min_agreement` real NOT NULL,
	`min_requests` integer NOT NULL,
	`state` text NOT NULL,
	`reason` text,
	`switched_seq` integer,
	`rollout_id` text,
	`created_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL,
	`updated_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL,
	FOREIGN KEY (`model`) REFERENCES `models`(`name`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE INDEX `shadow_runs_state_idx` ON `shadow_runs` (`state`);--> statement-breakpoint
CREATE INDEX `shadow_runs_rollout_idx` ON `shadow_runs` (`rollout_id`);--> statement-breakpoint
ALTER TABLE `rollouts` ADD `agreement_margin` real DEFAULT 0.01 NOT NULL;