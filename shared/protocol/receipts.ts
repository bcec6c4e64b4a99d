import { z } from 'zod';
import { deviceId, isoTime, MAX_EXAMPLES_PER_BATCH, PROTOCOL_VERSION } from './schemas.js';

/**
 * Payload of `devices/{id}/receipts` (cloud → device, QoS 1, not retained; DESIGN.md "Protocol").
 * A broker's PUBACK only says the broker has a batch; the receipt is the cloud's promise about each
 * example. The outbox deletes a row only on `stored` or `refused`, and keeps `deferred` rows for a
 * later retry. Receipts name example ids, never batch ids alone, because the outbox re-batches
 * under new batch ids (issue 9) — except for a payload whose ids could not be read at all.
 */

/** Why the cloud refuses an example (or a whole unreadable batch) for good. */
export const RECEIPT_REFUSALS = ['malformed', 'unknown_device', 'device_mismatch', 'oversized', 'revoked'] as const;
export type ReceiptRefusal = (typeof RECEIPT_REFUSALS)[number];

/** Upper bound of a deferral: a day. A quota that frees up later than that defers again. */
export const MAX_RETRY_AFTER_SECONDS = 86_400;

const exampleId = z.uuid();
const detail = z.string().max(512).optional();

export const refusedEntrySchema = z.strictObject({ id: exampleId, reason: z.enum(RECEIPT_REFUSALS), detail });
export const deferredEntrySchema = z.strictObject({ id: exampleId, retryAfterSeconds: z.number().int().min(1).max(MAX_RETRY_AFTER_SECONDS) });

const receiptBase = { v: z.literal(PROTOCOL_VERSION), deviceId, at: isoTime, batchId: z.uuid() };

/** Per example id: every id of the batch appears in exactly one list. */
export const exampleReceiptSchema = z
  .strictObject({
    ...receiptBase,
    kind: z.literal('examples'),
    /** Committed (or already stored: a duplicate is stored too, ingest is idempotent). */
    stored: z.array(exampleId).max(MAX_EXAMPLES_PER_BATCH),
    refused: z.array(refusedEntrySchema).max(MAX_EXAMPLES_PER_BATCH),
    deferred: z.array(deferredEntrySchema).max(MAX_EXAMPLES_PER_BATCH),
  })
  .refine((r) => r.stored.length + r.refused.length + r.deferred.length >= 1, { message: 'a receipt names at least one example', path: ['stored'] })
  .refine(
    (r) => {
      const ids = [...r.stored, ...r.refused.map((e) => e.id), ...r.deferred.map((e) => e.id)];
      return ids.length <= MAX_EXAMPLES_PER_BATCH && new Set(ids).size === ids.length;
    },
    { message: `each example id appears once, at most ${MAX_EXAMPLES_PER_BATCH} in all`, path: ['stored'] },
  );

/** A payload with no readable example ids is refused by its batch id (the device drops that batch). */
export const batchReceiptSchema = z.strictObject({
  ...receiptBase,
  kind: z.literal('batch'),
  refused: z.strictObject({ reason: z.enum(RECEIPT_REFUSALS), detail }),
});

/**
 * Either form. A plain union, not `z.discriminatedUnion`: the per-example form carries refinements,
 * and an unknown `kind` is refused either way.
 */
export const receiptSchema = z.union([exampleReceiptSchema, batchReceiptSchema]);
export type Receipt = z.infer<typeof receiptSchema>;
export type ExampleReceipt = z.infer<typeof exampleReceiptSchema>;
export type BatchReceipt = z.infer<typeof batchReceiptSchema>;
