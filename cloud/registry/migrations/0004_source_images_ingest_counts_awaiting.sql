CREATE TABLE `device_ingest_counts` (
	`device_id` text PRIMARY KEY NOT NULL,
	`deferred` integer DEFAULT 0 NOT NULL,
	`refused` integer DEFAULT 0 NOT NULL,
	`labels_ignored` integer DEFAULT 0 NOT NULL,
	`updated_at` text NOT NULL
);
--> statement-breakpoint
ALTER TABLE `examples` ADD `source_image` blob;--> statement-breakpoint
ALTER TABLE `examples` ADD `source_format` text;--> statement-breakpoint
ALTER TABLE `rollout_devices` ADD `awaiting_capabilities` integer DEFAULT false NOT NULL;