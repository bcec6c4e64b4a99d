CREATE TABLE `example_retention` (
	`model` text PRIMARY KEY NOT NULL,
	`deleted_by_age` integer DEFAULT 0 NOT NULL,
	`deleted_by_rows` integer DEFAULT 0 NOT NULL,
	`skipped_for_round` integer DEFAULT 0 NOT NULL,
	`last_run_at` text
);
