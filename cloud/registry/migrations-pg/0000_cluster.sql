CREATE TABLE "cluster_leader" (
	"id" integer PRIMARY KEY NOT NULL,
	"epoch" bigint NOT NULL,
	"holder" text NOT NULL,
	"acquired_at" timestamp with time zone DEFAULT now() NOT NULL,
	"renewed_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "cluster_leader_singleton" CHECK ("cluster_leader"."id" = 1)
);
--> statement-breakpoint
CREATE TABLE "cluster_round_claims" (
	"model_id" text PRIMARY KEY NOT NULL,
	"round_id" text NOT NULL,
	"epoch" bigint NOT NULL,
	"holder" text NOT NULL,
	"claimed_at" timestamp with time zone DEFAULT now() NOT NULL
);
