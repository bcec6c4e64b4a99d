CREATE TABLE `device_ingest_counts` (
	`device_id` text PRIMARY KEY NOT NULL,
	`deferred` integer DEFAULT 0 NOT NULL,
	`refused` integer DEFAULT 0 NOT NULL,
	`labels_ignored` integer DEFAULT 0 NOT NULL,
	`updated_at` text NOT NULL
);
