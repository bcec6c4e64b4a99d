import { randomUUID } from 'node:crypto';
import { PROTOCOL_VERSION, float32ToBase64, topics, type Example, type SourceImage } from '../../shared/protocol/index.js';

export interface BuildExampleInput {
  /** The model input as the model saw it (already scaled). */
  input: Float32Array;
  /** The model output as probabilities. */
  probs: Float32Array;
  reason: Example['reason'];
  model: string | null;
  release: number | null;
  /** Only for `feedback`: the class a user said is right. */
  label?: number;
  /** Defaults to a fresh `crypto.randomUUID()`: the id is the idempotency key all the way to the cloud. */
  id?: string;
  /** Defaults to now. */
  at?: Date;
  /** The re-encoded source image (image models, a cloud that accepts it: source-image.ts). */
  source?: SourceImage;
}

/**
 * Turns one inference into the protocol's `Example` (input as base64 float32, output as numbers).
 *
 * @example
 * const hit = selector.select({ input, probs });
 * if (hit) outbox.add(buildExample({ input, probs, reason: hit.reason, model: 'mnist', release: 7 }));
 */
export function buildExample({ input, probs, reason, model, release, label, source, id = randomUUID(), at = new Date() }: BuildExampleInput): Example {
  return {
    id,
    input: float32ToBase64(input),
    output: Array.from(probs),
    model,
    release,
    at: at.toISOString(),
    reason,
    ...(label === undefined ? {} : { label }),
    ...(source === undefined ? {} : { source }),
  };
}

/** A placeholder batch id: every UUID has 36 characters, so the envelope's size does not depend on it. */
const SOME_UUID = '00000000-0000-4000-8000-000000000000';

/**
 * Bytes an MQTT PUBLISH of `examples(deviceId)` adds around its payload: the fixed header (1 byte and a
 * remaining length of at most 4), the topic (2-byte length and the name) and the packet id of QoS 1
 * (MQTT 3.1.1 §3.3; a broker's maximum packet size counts all of it).
 */
export function publishOverheadBytes(deviceId: string): number {
  return 1 + 4 + 2 + Buffer.byteLength(topics.examples(deviceId)) + 2;
}

/**
 * The largest example (its JSON, base64 input included, as the outbox stores it) that still fits one
 * MQTT message of at most `maxPacketBytes` when sent alone: the packet minus the PUBLISH overhead and
 * the batch envelope `{"v":…,"deviceId":…,"batchId":…,"examples":[…]}`.
 *
 * @example
 * const outbox = await Outbox.create({ path, maxRows, maxBytes, maxExampleBytes: maxExampleBytes(1 << 20, 'pi-7') });
 */
export function maxExampleBytes(maxPacketBytes: number, deviceId: string): number {
  const envelope = Buffer.byteLength(JSON.stringify({ v: PROTOCOL_VERSION, deviceId, batchId: SOME_UUID, examples: [] }));
  return maxPacketBytes - publishOverheadBytes(deviceId) - envelope;
}
