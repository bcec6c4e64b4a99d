CREATE TABLE `artifact_blobs` (
	`sha256` text PRIMARY KEY NOT NULL,
	`bytes` integer NOT NULL,
	`chunk_size` integer NOT NULL,
	`chunk_set` text NOT NULL,
	`created_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `artifact_blobs_chunk_set_idx` ON `artifact_blobs` (`chunk_set`);--> statement-breakpoint
CREATE TABLE `artifact_chunks` (
	`chunk_set` text NOT NULL,
	`idx` integer NOT NULL,
	`data` blob NOT NULL,
	`created_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL,
	PRIMARY KEY(`chunk_set`, `idx`)
);
--> statement-breakpoint
CREATE INDEX `artifact_chunks_created_at_idx` ON `artifact_chunks` (`created_at`);