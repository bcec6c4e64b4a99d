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
ALTER TABLE `devices` ADD `desired_agent_seq` integer;