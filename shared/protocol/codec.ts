import type { z } from 'zod';
import { eventSchema, examplesBatchSchema, statusSchema, telemetrySchema } from './schemas.js';
import type { DeviceTopicKind } from './topics.js';

export class PayloadError extends Error {
  override readonly name = 'PayloadError';
}

/** Largest payload we parse at all; bigger ones are rejected before JSON.parse touches them. */
export const MAX_PAYLOAD_BYTES = 8 * 1024 * 1024;

/** Formats zod issues as `path: message` lines. */
export function formatIssues(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`).join('; ');
}

/** Parses MQTT/HTTP bytes as JSON and validates them; throws PayloadError with a precise reason. */
export function decodePayload<S extends z.ZodType>(schema: S, payload: Uint8Array | string): z.infer<S> {
  const size = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.byteLength;
  if (size === 0) throw new PayloadError('empty payload');
  if (size > MAX_PAYLOAD_BYTES) throw new PayloadError(`payload of ${size} bytes exceeds ${MAX_PAYLOAD_BYTES}`);
  let json: unknown;
  try {
    json = JSON.parse(typeof payload === 'string' ? payload : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8'));
  } catch (err) {
    throw new PayloadError(`not JSON: ${(err as Error).message}`);
  }
  const r = schema.safeParse(json);
  if (!r.success) throw new PayloadError(formatIssues(r.error));
  return r.data;
}

/** Validates before encoding, so we never publish something our own peers would reject. */
export function encodePayload<S extends z.ZodType>(schema: S, value: z.input<S>): Buffer {
  const r = schema.safeParse(value);
  if (!r.success) throw new PayloadError(`refusing to send invalid payload: ${formatIssues(r.error)}`);
  return Buffer.from(JSON.stringify(r.data));
}

/** Schema of the device → cloud topics, keyed by topic kind. */
export const deviceTopicSchemas = {
  status: statusSchema,
  telemetry: telemetrySchema,
  events: eventSchema,
  examples: examplesBatchSchema,
} as const satisfies Partial<Record<DeviceTopicKind, z.ZodType>>;

/** Float32 <-> base64 (little-endian), the wire form of example inputs. */
export function float32ToBase64(values: Float32Array): string {
  return Buffer.from(values.buffer, values.byteOffset, values.byteLength).toString('base64');
}

export function base64ToFloat32(b64: string): Float32Array {
  const buf = Buffer.from(b64, 'base64');
  if (buf.byteLength % 4 !== 0) throw new PayloadError(`base64 float32 data has ${buf.byteLength} bytes, not a multiple of 4`);
  // Copy into an aligned buffer: Buffer pool slices may not be 4-byte aligned.
  const out = new Float32Array(buf.byteLength / 4);
  new Uint8Array(out.buffer).set(buf);
  return out;
}
