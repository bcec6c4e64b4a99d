CREATE TABLE `rollout_transitions` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`rollout_id` text NOT NULL,
	`device_id` text,
	`at` text NOT NULL,
	`from_state` text,
	`to_state` text NOT NULL,
	`reason` text
);
--> statement-breakpoint
CREATE INDEX `rollout_transitions_rollout_idx` ON `rollout_transitions` (`rollout_id`,`id`);--> statement-breakpoint
ALTER TABLE `rollout_devices` ADD `wave` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `rollout_devices` ADD `desired_at` text;--> statement-breakpoint
ALTER TABLE `rollout_devices` ADD `deadline_at` text;--> statement-breakpoint
ALTER TABLE `rollout_devices` ADD `installed_at` text;--> statement-breakpoint
ALTER TABLE `rollout_devices` ADD `superseded_by` text;--> statement-breakpoint
CREATE INDEX `rollout_devices_state_idx` ON `rollout_devices` (`rollout_id`,`state`);--> statement-breakpoint
ALTER TABLE `rollouts` ADD `waves` text;--> statement-breakpoint
ALTER TABLE `rollouts` ADD `wave` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `rollouts` ADD `wave_started_at` text;--> statement-breakpoint
ALTER TABLE `rollouts` ADD `device_timeout_seconds` integer DEFAULT 3600 NOT NULL;--> statement-breakpoint
ALTER TABLE `rollouts` ADD `min_failures` integer DEFAULT 2 NOT NULL;--> statement-breakpoint
ALTER TABLE `rollouts` ADD `canary_grace_seconds` integer DEFAULT 300 NOT NULL;--> statement-breakpoint
ALTER TABLE `rollouts` ADD `replacements` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `rollouts` ADD `paused_at` text;--> statement-breakpoint
ALTER TABLE `rollouts` ADD `pause_reason` text;--> statement-breakpoint
ALTER TABLE `rollouts` ADD `security_alert` text;--> statement-breakpoint
ALTER TABLE `rollouts` ADD `quarantine_seqs` text;