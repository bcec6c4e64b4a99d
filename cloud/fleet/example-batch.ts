import { z } from 'zod';
import { examplesBatchSchema, exampleSchema, formatIssues, MAX_EXAMPLES_PER_BATCH, type ReceiptRefusal } from '../../shared/protocol/index.js';
import { sniffImage } from '../../shared/image/preprocess.js';
import type { ExampleRowValues } from './example-commit.js';

/** The batch envelope with its examples left unparsed, so each example is validated on its own. */
const envelopeSchema = z.strictObject({
  v: examplesBatchSchema.shape.v,
  deviceId: examplesBatchSchema.shape.deviceId,
  batchId: examplesBatchSchema.shape.batchId,
  examples: z.array(z.unknown()).min(1).max(MAX_EXAMPLES_PER_BATCH),
});
const uuid = z.uuid();

export interface Refused {
  id: string;
  reason: ReceiptRefusal;
  detail?: string;
}

/** What one `examples` payload holds, example by example (issue 9: one bad example does not sink its batch). */
export type ParsedBatch =
  | {
      ok: true;
      batchId: string;
      rows: ExampleRowValues[];
      refused: Refused[];
      unreadable: number;
      /** Labels dropped because their example is not a `feedback` row (issue 10: only feedback carries a label). */
      labelsIgnored: number;
      /** Source images dropped because their bytes are not the PNG/JPEG they claim to be (the examples are kept). */
      sourcesDropped: number;
    }
  /** The whole payload is refused: by its batch id when one is readable, else nobody can be told. */
  | { ok: false; batchId: string | undefined; reason: ReceiptRefusal; detail: string };

function readableId(x: unknown): string | undefined {
  const id = (x as { id?: unknown } | null)?.id;
  return uuid.safeParse(id).success ? (id as string) : undefined;
}

/**
 * Parses an examples payload from `devices/{topicDevice}/examples`. Never throws: every problem becomes
 * a refusal (malformed, device_mismatch, oversized) for the example or, when no example can be named,
 * for the batch.
 */
export function parseExampleBatch(topicDevice: string, payload: Buffer): ParsedBatch {
  let raw: unknown;
  try {
    raw = JSON.parse(payload.toString('utf8'));
  } catch (err) {
    return { ok: false, batchId: undefined, reason: 'malformed', detail: `not JSON: ${(err as Error).message}`.slice(0, 500) };
  }
  const rawBatchId = (raw as { batchId?: unknown } | null)?.batchId;
  const batchId = uuid.safeParse(rawBatchId).success ? (rawBatchId as string) : undefined;
  const env = envelopeSchema.safeParse(raw);
  if (!env.success) return { ok: false, batchId, reason: 'malformed', detail: formatIssues(env.error).slice(0, 500) };
  // A device may only speak for itself: the broker ACL binds topics to credentials, not payloads.
  if (env.data.deviceId !== topicDevice) return { ok: false, batchId, reason: 'device_mismatch', detail: `deviceId "${env.data.deviceId}" is not the topic's "${topicDevice}"` };
  const rows: ExampleRowValues[] = [];
  const refused: Refused[] = [];
  const seen = new Set<string>();
  let unreadable = 0;
  let labelsIgnored = 0;
  let sourcesDropped = 0;
  for (const item of env.data.examples) {
    const p = exampleSchema.safeParse(item);
    if (!p.success) {
      const id = readableId(item);
      if (!id) {
        unreadable++;
        continue;
      }
      const tooBig = p.error.issues.some((i) => i.code === 'too_big' && (i.path[0] === 'input' || i.path[0] === 'source'));
      refused.push({ id, reason: tooBig ? 'oversized' : 'malformed', detail: formatIssues(p.error).slice(0, 500) });
      continue;
    }
    const ex = p.data;
    if (seen.has(ex.id)) continue; // the same id twice in one batch: one row, one receipt entry
    seen.add(ex.id);
    // Stored as the little-endian float32 bytes the device sent: no Float32Array round trip.
    const input = Buffer.from(ex.input, 'base64');
    if (input.byteLength === 0 || input.byteLength % 4 !== 0) {
      refused.push({ id: ex.id, reason: 'malformed', detail: `input has ${input.byteLength} bytes, not a non-empty multiple of 4` });
      continue;
    }
    // A device label is trusted only where a user gave it (/v1/feedback); on any other row it is dropped.
    const label = ex.reason === 'feedback' ? (ex.label ?? null) : null;
    if (ex.label !== undefined && label === null) labelsIgnored++;
    // A source image must be the format it says it is; one that is not is dropped (counted), the example kept.
    let source: Buffer | null = null;
    if (ex.source) {
      source = Buffer.from(ex.source.data, 'base64');
      if (sniffImage(source) !== ex.source.format) {
        source = null;
        sourcesDropped++;
      }
    }
    rows.push([ex.id, topicDevice, ex.model, ex.release, input, JSON.stringify(ex.output), ex.reason, label, ex.at, source, source ? ex.source!.format : null, '']);
  }
  return { ok: true, batchId: env.data.batchId, rows, refused, unreadable, labelsIgnored, sourcesDropped };
}
