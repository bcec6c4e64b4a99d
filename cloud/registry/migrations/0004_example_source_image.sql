ALTER TABLE `examples` ADD `source_image` blob;--> statement-breakpoint
ALTER TABLE `examples` ADD `source_format` text;