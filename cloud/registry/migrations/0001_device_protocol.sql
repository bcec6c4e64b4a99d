ALTER TABLE `devices` ADD `protocol_version` integer;--> statement-breakpoint
ALTER TABLE `devices` ADD `capabilities` text;--> statement-breakpoint
ALTER TABLE `devices` ADD `trust` text;--> statement-breakpoint
ALTER TABLE `devices` ADD `degraded` text;