CREATE TABLE `audit_log` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`at` text NOT NULL,
	`actor` text NOT NULL,
	`action` text NOT NULL,
	`target` text,
	`detail` text
);
--> statement-breakpoint
CREATE INDEX `audit_log_at_idx` ON `audit_log` (`at`);--> statement-breakpoint
CREATE TABLE `device_events` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`device_id` text NOT NULL,
	`at` text NOT NULL,
	`received_at` text NOT NULL,
	`source` text DEFAULT 'device' NOT NULL,
	`type` text NOT NULL,
	`model` text,
	`release` integer,
	`sha256` text,
	`reason` text,
	`detail` text
);
--> statement-breakpoint
CREATE INDEX `device_events_device_idx` ON `device_events` (`device_id`,`id`);--> statement-breakpoint
CREATE INDEX `device_events_received_idx` ON `device_events` (`received_at`);--> statement-breakpoint
CREATE TABLE `example_retention` (
	`model` text PRIMARY KEY NOT NULL,
	`deleted_by_age` integer DEFAULT 0 NOT NULL,
	`deleted_by_rows` integer DEFAULT 0 NOT NULL,
	`skipped_for_round` integer DEFAULT 0 NOT NULL,
	`last_run_at` text
);
--> statement-breakpoint
CREATE TABLE `telemetry_history` (
	`device_id` text NOT NULL,
	`resolution` text NOT NULL,
	`bucket` integer NOT NULL,
	`samples` integer NOT NULL,
	`latency_p50` real,
	`latency_samples` integer DEFAULT 0 NOT NULL,
	`latency_p95` real,
	`requests` integer DEFAULT 0 NOT NULL,
	`errors` integer DEFAULT 0 NOT NULL,
	`rss_bytes` integer,
	`outbox_depth` integer,
	`outbox_dropped` integer DEFAULT 0 NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `telemetry_history_pk` ON `telemetry_history` (`device_id`,`resolution`,`bucket`);--> statement-breakpoint
CREATE INDEX `telemetry_history_bucket_idx` ON `telemetry_history` (`resolution`,`bucket`);--> statement-breakpoint
ALTER TABLE `devices` ADD `health` text;--> statement-breakpoint
ALTER TABLE `devices` ADD `dropped_at` text;--> statement-breakpoint
ALTER TABLE `devices` ADD `rolled_back_at` text;--> statement-breakpoint
CREATE INDEX `devices_running_idx` ON `devices` (`running_seq`);--> statement-breakpoint
CREATE INDEX `devices_last_seen_idx` ON `devices` (`last_seen`);--> statement-breakpoint
ALTER TABLE `examples` ADD `label_state` text;