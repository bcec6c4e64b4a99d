ALTER TABLE `devices` ADD `agent` text;--> statement-breakpoint
ALTER TABLE `devices` ADD `platform` text;