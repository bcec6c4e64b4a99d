import { describe, expect, it } from 'vitest';
import { makeManifest, modelBytes } from '../updates/fixtures.js';
import {
  base64ToFloat32,
  decodePayload,
  deviceTopicSchemas,
  encodePayload,
  eventSchema,
  examplesBatchSchema,
  float32ToBase64,
  MAX_PAYLOAD_BYTES,
  PayloadError,
  signedManifestSchema,
  manifestSchema,
  statusSchema,
  telemetrySchema,
} from '../../../shared/protocol/index.js';

const at = '2025-01-01T00:00:00.000Z';
const sha = 'cd'.repeat(32);

const valid = {
  status: { v: 1, deviceId: 'pi-1', state: 'online', model: 'm', release: 3, sha256: sha, at },
  telemetry: {
    v: 1, deviceId: 'pi-1', at, model: null, release: null, uptimeSeconds: 1.5, requests: 10, errors: 0,
    latencyMs: { p50: 1, p95: null }, rssBytes: 1000,
    outbox: { depth: 0, bytes: 0, dropped: 0, evicted: 0, selected: 0, published: 0 }, health: 'no_model',
  },
  events: { v: 1, deviceId: 'pi-1', at, type: 'rejected', model: null, release: null, sha256: null, reason: 'bad_signature', detail: 'x' },
  examples: {
    v: 1, deviceId: 'pi-1', batchId: '0f8fad5b-d9cb-469f-a165-70867728950e',
    examples: [{ id: '7c9e6679-7425-40de-944b-e07fc1f90ae7', input: float32ToBase64(new Float32Array([1, 2])), output: [0.4, 0.6], model: 'm', release: 1, at, reason: 'low_margin' }],
  },
} as const;

/** One wrong-typed field per schema: a value a sloppy peer might send. */
const wrongTypes: Record<keyof typeof valid, Array<[string, Record<string, unknown>]>> = {
  status: [['state', { state: 'sleeping' }], ['release as string', { release: '3' }], ['sha uppercase', { sha256: sha.toUpperCase() }], ['bad time', { at: 'yesterday' }], ['v2', { v: 2 }], ['unknown key', { extra: true }], ['bad device id', { deviceId: 'a/b' }]],
  telemetry: [['negative count', { requests: -1 }], ['fractional count', { errors: 0.5 }], ['health', { health: 'fine' }], ['missing outbox', { outbox: undefined }], ['latency string', { latencyMs: { p50: '1', p95: null } }]],
  events: [['type', { type: 'exploded' }], ['reason', { reason: 'because' }], ['release zero', { release: 0 }], ['detail too long', { detail: 'x'.repeat(1025) }]],
  examples: [['empty batch', { examples: [] }], ['batch id', { batchId: 'not-a-uuid' }], ['example reason', { examples: [{ ...valid.examples.examples[0], reason: 'random' }] }], ['example input', { examples: [{ ...valid.examples.examples[0], input: '***' }] }]],
};

describe('decodePayload', () => {
  it.each(Object.keys(valid) as Array<keyof typeof valid>)('accepts a valid %s payload (bytes and text)', (kind) => {
    const schema = deviceTopicSchemas[kind];
    const json = JSON.stringify(valid[kind]);
    expect(decodePayload(schema, Buffer.from(json))).toMatchObject(valid[kind]);
    expect(decodePayload(schema, json)).toMatchObject(valid[kind]);
    // A Uint8Array view into a larger buffer decodes only its own bytes.
    const padded = Buffer.from(`xx${json}yy`);
    expect(decodePayload(schema, new Uint8Array(padded.buffer, padded.byteOffset + 2, padded.length - 4))).toMatchObject(valid[kind]);
  });

  for (const kind of Object.keys(valid) as Array<keyof typeof valid>) {
    it.each(wrongTypes[kind])(`refuses ${kind} with wrong %s`, (_name, patch) => {
      const bad = JSON.stringify({ ...valid[kind], ...patch });
      expect(() => decodePayload(deviceTopicSchemas[kind], bad)).toThrow(PayloadError);
    });
    it(`refuses ${kind}: empty, malformed, non-object and oversize payloads`, () => {
      const schema = deviceTopicSchemas[kind];
      expect(() => decodePayload(schema, Buffer.alloc(0))).toThrow(/empty payload/);
      expect(() => decodePayload(schema, '')).toThrow(/empty payload/);
      expect(() => decodePayload(schema, '{"v":1,')).toThrow(/not JSON/);
      expect(() => decodePayload(schema, Buffer.from([0xff, 0xfe, 0x00]))).toThrow(PayloadError);
      for (const json of ['null', '42', '"text"', '[]', 'true']) expect(() => decodePayload(schema, json)).toThrow(PayloadError);
      expect(() => decodePayload(schema, Buffer.alloc(MAX_PAYLOAD_BYTES + 1, 0x20))).toThrow(/exceeds/);
    });
  }

  it('refuses a signed manifest envelope with a wrong shape, and reports the path', () => {
    expect(() => decodePayload(signedManifestSchema, JSON.stringify({ manifest: {}, signature: { alg: 'ed25519', keyId: 'zz', sig: 'AA==' } }))).toThrow(/signature\.keyId/);
    expect(() => decodePayload(signedManifestSchema, '{"manifest":{}}')).toThrow(/signature/);
  });
});

describe('encodePayload', () => {
  it('encodes a valid payload and refuses an invalid one', () => {
    expect(JSON.parse(encodePayload(statusSchema, valid.status as never).toString())).toEqual(valid.status);
    expect(() => encodePayload(eventSchema, { ...valid.events, type: 'nope' } as never)).toThrow(/refusing to send/);
    expect(() => encodePayload(telemetrySchema, {} as never)).toThrow(PayloadError);
    expect(() => encodePayload(examplesBatchSchema, { ...valid.examples, examples: [] } as never)).toThrow(PayloadError);
  });
});

describe('float32 base64', () => {
  it('roundtrips and refuses lengths that are not a multiple of 4', () => {
    const v = new Float32Array([1.5, -2, 3.25]);
    expect(Array.from(base64ToFloat32(float32ToBase64(v)))).toEqual([1.5, -2, 3.25]);
    expect(() => base64ToFloat32(Buffer.from([1, 2, 3]).toString('base64'))).toThrow(PayloadError);
  });
});

describe('manifest schema through decodePayload', () => {
  const good = makeManifest(modelBytes(3000));
  it('accepts a valid manifest and fills defaults', () => {
    const { raw: _raw, ...input } = good.input;
    expect(decodePayload(manifestSchema, JSON.stringify({ ...good, input })).input.raw).toBe('float32');
  });
  it.each([
    ['release 0', { release: 0 }],
    ['release as string', { release: '1' }],
    ['bad model name', { model: '../evil' }],
    ['labels not matching classes', { labels: ['a', 'b', 'c'] }],
    ['self-test expected length', { selfTest: { ...good.selfTest, expected: [1] } }],
    ['self-test input length', { selfTest: { ...good.selfTest, input: [1, 2] } }],
    ['chunk count', { artifact: { ...good.artifact, chunks: good.artifact.chunks.slice(1) } }],
    ['uppercase sha', { artifact: { ...good.artifact, sha256: good.artifact.sha256.toUpperCase() } }],
    ['ftp url', { artifact: { ...good.artifact, url: 'ftp://x/y' } }],
    ['tiny chunk size', { artifact: { ...good.artifact, chunkSize: 10 } }],
    ['time without offset', { expiresAt: '2030-01-01 00:00' }],
    ['unknown key', { extra: 1 }],
    ['NaN-like metric', { metrics: { accuracy: 'high' } }],
  ])('refuses a manifest with %s', (_name, patch) => {
    expect(() => decodePayload(manifestSchema, JSON.stringify({ ...good, ...patch }))).toThrow(PayloadError);
  });
});
