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
CREATE INDEX `rollouts_state_idx` ON `rollouts` (`state`);