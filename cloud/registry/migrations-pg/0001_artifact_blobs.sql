CREATE TABLE "artifact_blobs" (
	"sha256" text PRIMARY KEY NOT NULL,
	"bytes" bigint NOT NULL,
	"chunk_size" bigint NOT NULL,
	"chunk_set" text NOT NULL,
	"created_at" text DEFAULT to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') NOT NULL
);
--> statement-breakpoint
CREATE TABLE "artifact_chunks" (
	"chunk_set" text NOT NULL,
	"idx" bigint NOT NULL,
	"data" "bytea" NOT NULL,
	"created_at" text DEFAULT to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') NOT NULL,
	CONSTRAINT "artifact_chunks_chunk_set_idx_pk" PRIMARY KEY("chunk_set","idx")
);
--> statement-breakpoint
CREATE UNIQUE INDEX "artifact_blobs_chunk_set_idx" ON "artifact_blobs" USING btree ("chunk_set");--> statement-breakpoint
CREATE INDEX "artifact_chunks_created_at_idx" ON "artifact_chunks" USING btree ("created_at");