CREATE TABLE `agent_releases` (
	`agent_seq` integer PRIMARY KEY NOT NULL,
	`version` text NOT NULL,
	`platform` text NOT NULL,
	`sha256` text NOT NULL,
	`bytes` integer NOT NULL,
	`manifest` text NOT NULL,
	`signature` text NOT NULL,
	`reissue_of` integer,
	`artifact_path` text NOT NULL,
	`chunks_published` integer DEFAULT false NOT NULL,
	`created_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL
);
--> statement-breakpoint
CREATE INDEX `agent_releases_version_idx` ON `agent_releases` (`version`,`platform`);--> statement-breakpoint
CREATE INDEX `agent_releases_sha_idx` ON `agent_releases` (`sha256`);--> statement-breakpoint
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
PRAGMA foreign_keys=OFF;--> statement-breakpoint
CREATE TABLE `__new_rollouts` (
	`id` text PRIMARY KEY NOT NULL,
	`model` text NOT NULL,
	`release_seq` integer NOT NULL,
	`target` text NOT NULL,
	`canary_share` real NOT NULL,
	`soak_seconds` integer NOT NULL,
	`failure_threshold` real NOT NULL,
	`state` text NOT NULL,
	`reason` text,
	`rollback_seq` integer,
	`canary_started_at` text,
	`canary_healthy_since` text,
	`waves` text,
	`wave` integer DEFAULT 0 NOT NULL,
	`wave_started_at` text,
	`device_timeout_seconds` integer DEFAULT 3600 NOT NULL,
	`min_failures` integer DEFAULT 2 NOT NULL,
	`canary_grace_seconds` integer DEFAULT 300 NOT NULL,
	`replacements` integer DEFAULT 0 NOT NULL,
	`paused_at` text,
	`pause_reason` text,
	`security_alert` text,
	`quarantine_seqs` text,
	`created_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL,
	`updated_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL
);
--> statement-breakpoint
INSERT INTO `__new_rollouts`("id", "model", "release_seq", "target", "canary_share", "soak_seconds", "failure_threshold", "state", "reason", "rollback_seq", "canary_started_at", "canary_healthy_since", "waves", "wave", "wave_started_at", "device_timeout_seconds", "min_failures", "canary_grace_seconds", "replacements", "paused_at", "pause_reason", "security_alert", "quarantine_seqs", "created_at", "updated_at") SELECT "id", "model", "release_seq", "target", "canary_share", "soak_seconds", "failure_threshold", "state", "reason", "rollback_seq", "canary_started_at", "canary_healthy_since", "waves", "wave", "wave_started_at", "device_timeout_seconds", "min_failures", "canary_grace_seconds", "replacements", "paused_at", "pause_reason", "security_alert", "quarantine_seqs", "created_at", "updated_at" FROM `rollouts`;--> statement-breakpoint
DROP TABLE `rollouts`;--> statement-breakpoint
ALTER TABLE `__new_rollouts` RENAME TO `rollouts`;--> statement-breakpoint
PRAGMA foreign_keys=ON;--> statement-breakpoint
CREATE INDEX `rollouts_state_idx` ON `rollouts` (`state`);--> statement-breakpoint
ALTER TABLE `devices` ADD `desired_agent_seq` integer;--> statement-breakpoint
ALTER TABLE `releases` ADD `cohort` text;