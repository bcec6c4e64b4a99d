CREATE TABLE `devices` (
	`id` text PRIMARY KEY NOT NULL,
	`groups` text NOT NULL,
	`credential_hash` text NOT NULL,
	`last_seen` text,
	`online` integer DEFAULT false NOT NULL,
	`running_seq` integer,
	`running_sha256` text,
	`desired_seq` integer,
	`last_telemetry` text,
	`revoked` integer DEFAULT false NOT NULL,
	`created_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL
);
--> statement-breakpoint
CREATE INDEX `devices_online_idx` ON `devices` (`online`);--> statement-breakpoint
CREATE TABLE `examples` (
	`id` text PRIMARY KEY NOT NULL,
	`device_id` text NOT NULL,
	`model` text,
	`release_seq` integer,
	`input` blob NOT NULL,
	`student_output` text NOT NULL,
	`reason` text NOT NULL,
	`label` integer,
	`teacher_logits` blob,
	`teacher_id` text,
	`captured_at` text NOT NULL,
	`ingested_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL
);
--> statement-breakpoint
CREATE INDEX `examples_device_idx` ON `examples` (`device_id`);--> statement-breakpoint
CREATE INDEX `examples_model_idx` ON `examples` (`model`,`ingested_at`);--> statement-breakpoint
CREATE INDEX `examples_release_idx` ON `examples` (`release_seq`);--> statement-breakpoint
CREATE TABLE `meta` (
	`key` text PRIMARY KEY NOT NULL,
	`value` text NOT NULL
);
--> statement-breakpoint
CREATE TABLE `models` (
	`name` text PRIMARY KEY NOT NULL,
	`input_spec` text NOT NULL,
	`labels` text NOT NULL,
	`teacher` text NOT NULL,
	`student_spec` text NOT NULL,
	`distill_settings` text NOT NULL,
	`schedule` text,
	`created_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL,
	`updated_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL
);
--> statement-breakpoint
CREATE TABLE `releases` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`model` text NOT NULL,
	`seq` integer NOT NULL,
	`sha256` text NOT NULL,
	`bytes` integer NOT NULL,
	`quantization` text NOT NULL,
	`metrics` text NOT NULL,
	`manifest` text NOT NULL,
	`signature` text NOT NULL,
	`parent_seq` integer,
	`round_id` text,
	`artifact_path` text NOT NULL,
	`chunks_published` integer DEFAULT false NOT NULL,
	`created_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL,
	FOREIGN KEY (`model`) REFERENCES `models`(`name`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE UNIQUE INDEX `releases_seq_unique` ON `releases` (`seq`);--> statement-breakpoint
CREATE INDEX `releases_model_idx` ON `releases` (`model`);--> statement-breakpoint
CREATE INDEX `releases_sha_idx` ON `releases` (`sha256`);--> statement-breakpoint
CREATE TABLE `rollout_devices` (
	`rollout_id` text NOT NULL,
	`device_id` text NOT NULL,
	`canary` integer NOT NULL,
	`state` text NOT NULL,
	`reason` text,
	`updated_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL,
	FOREIGN KEY (`rollout_id`) REFERENCES `rollouts`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE UNIQUE INDEX `rollout_devices_pk` ON `rollout_devices` (`rollout_id`,`device_id`);--> statement-breakpoint
CREATE INDEX `rollout_devices_device_idx` ON `rollout_devices` (`device_id`);--> statement-breakpoint
CREATE TABLE `rollouts` (
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
	`created_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL,
	`updated_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL,
	FOREIGN KEY (`model`) REFERENCES `models`(`name`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE INDEX `rollouts_state_idx` ON `rollouts` (`state`);--> statement-breakpoint
CREATE TABLE `rounds` (
	`id` text PRIMARY KEY NOT NULL,
	`model` text NOT NULL,
	`state` text NOT NULL,
	`trigger` text NOT NULL,
	`progress` text,
	`metrics` text,
	`error` text,
	`release_seq` integer,
	`example_count` integer,
	`attempts` integer DEFAULT 0 NOT NULL,
	`started_at` text,
	`finished_at` text,
	`created_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL,
	FOREIGN KEY (`model`) REFERENCES `models`(`name`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE INDEX `rounds_model_idx` ON `rounds` (`model`,`state`);