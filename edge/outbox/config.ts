import { z } from 'zod';
import { MAX_EXAMPLES_PER_BATCH, MAX_SOURCE_IMAGE_BYTES } from '../../shared/protocol/index.js';

/**
 * Outbox part of the daemon's config file; `{}` is valid. The file path is not here: the daemon
 * derives it from its data directory.
 *
 * @example
 * const cfg = outboxConfigSchema.parse({ maxRows: 5000 });
 * const outbox = await Outbox.create({ path: join(dataDir, 'outbox.db'), maxRows: cfg.maxRows, maxBytes: cfg.maxBytes, log });
 */
export const outboxConfigSchema = z.strictObject({
  /** Row bound of the store. */
  maxRows: z.number().int().min(1).max(10_000_000).default(10_000),
  /** Byte bound of the store (sum of example JSON sizes); 64 MiB. */
  maxBytes: z.number().int().min(1024).max(2 ** 40).default(64 * 1024 * 1024),
  batch: z
    .strictObject({
      maxExamples: z.number().int().min(1).max(MAX_EXAMPLES_PER_BATCH).default(64),
      /** 128 KiB fits AWS IoT Core's message limit; a single larger example is still sent alone. */
      maxBytes: z.number().int().min(1024).max(8 * 1024 * 1024).default(128 * 1024),
    })
    .prefault({}),
  /**
   * The writer that commits selected examples off the request path (OutboxWriter): every `flushMs`,
   * or at once when `batchRows` are queued. Power loss can lose what is queued (never acknowledged).
   */
  write: z
    .strictObject({
      flushMs: z.number().int().min(0).max(10_000).default(100),
      batchRows: z.number().int().min(1).max(10_000).default(64),
      /** Queued examples kept at most while a commit is slow; past it new ones are refused and counted. */
      maxPending: z.number().int().min(1).max(100_000).default(512),
    })
    .refine((w) => w.maxPending >= w.batchRows, { message: 'maxPending must be >= batchRows', path: ['maxPending'] })
    .prefault({}),
  /**
   * Image models: a hard example carries its source image, re-encoded, when that is at most this many
   * bytes (else it goes without, counted) and the cloud accepts source images; 0 never attaches one.
   */
  sourceImageMaxBytes: z.number().int().min(0).max(MAX_SOURCE_IMAGE_BYTES).default(16 * 1024),
  /** Without a PUBACK this long (while connected), the batch is abandoned and its rows resent. */
  ackTimeoutMs: z.number().int().min(100).max(3_600_000).default(30_000),
  /**
   * With a cloud that sends receipts: the first wait for one before the batch's rows go again. The wait
   * adapts: at least 3× the observed receipt latency, doubled per resend of the same rows, jittered.
   */
  receiptTimeoutMs: z.number().int().min(100).max(3_600_000).default(60_000),
  /** The adaptive receipt wait never exceeds this (30 min). */
  receiptTimeoutMaxMs: z.number().int().min(100).max(24 * 3_600_000).default(1_800_000),
  /** Batches sent and not yet receipted, at most (deploy/mosquitto sizes the cloud's queue on 4). */
  maxInFlight: z.number().int().min(1).max(64).default(4),
  /** After each connect, start sending after a uniform random delay below this (a fleet must not flush at once). */
  connectJitterMs: z.number().int().min(0).max(600_000).default(5_000),
  backoff: z
    .strictObject({
      initialMs: z.number().int().min(1).max(3_600_000).default(1_000),
      maxMs: z.number().int().min(1).max(3_600_000).default(60_000),
    })
    .refine((b) => b.maxMs >= b.initialMs, { message: 'maxMs must be >= initialMs', path: ['maxMs'] })
    .prefault({}),
});

export type OutboxConfig = z.infer<typeof outboxConfigSchema>;
export type OutboxConfigInput = z.input<typeof outboxConfigSchema>;
export const DEFAULT_OUTBOX_CONFIG: OutboxConfig = outboxConfigSchema.parse({});
