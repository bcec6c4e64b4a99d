import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Outbox, OutboxError, maxExampleBytes, publishOverheadBytes } from '../../../edge/outbox/index.js';
import { PROTOCOL_VERSION, encodePayload, examplesBatchSchema, exampleSchema, topics, type Example } from '../../../shared/protocol/index.js';
import { captureLogger } from '../../helpers/log.js';
import { makeExample, rowBytes, tempDir } from './helpers.js';

let tmp: ReturnType<typeof tempDir>;
const open: Outbox[] = [];
async function openOutbox(opts: { maxExampleBytes?: number; maxRows?: number; log?: ReturnType<typeof captureLogger>['log'] } = {}): Promise<Outbox> {
  const o = await Outbox.create({ path: join(tmp.dir, `o${open.length}.db`), maxRows: opts.maxRows ?? 1000, maxBytes: 64 << 20, ...opts });
  open.push(o);
  return o;
}

beforeEach(() => {
  tmp = tempDir();
});
afterEach(() => {
  for (const o of open.splice(0)) o.dispose();
  tmp.cleanup();
});

/** The MQTT PUBLISH packet the publisher would send for this one example (header + topic + id + payload). */
function packetBytes(deviceId: string, e: Example): number {
  const payload = encodePayload(examplesBatchSchema, { v: PROTOCOL_VERSION, deviceId, batchId: crypto.randomUUID(), examples: [exampleSchema.parse(e)] });
  const remaining = 2 + Buffer.byteLength(topics.examples(deviceId)) + 2 + payload.byteLength;
  const lengthBytes = remaining < 128 ? 1 : remaining < 16_384 ? 2 : remaining < 2_097_152 ? 3 : 4;
  return 1 + lengthBytes + remaining;
}

/** An example whose stored JSON is exactly `bytes` long (the base64 input is padded by whole floats, the `model` name by the rest). */
function exampleOfBytes(bytes: number): Example {
  const base = makeExample('low_margin', 4, { model: '' });
  const floats = Math.floor((bytes - rowBytes(base)) / 16) * 3; // 3 floats = 12 bytes = 16 base64 chars
  const e = makeExample('low_margin', 4 + floats, { model: '' });
  return { ...e, model: 'm'.repeat(bytes - rowBytes(e)) };
}

describe('oversized examples (mqtt.maxPacketBytes)', () => {
  it('maxExampleBytes leaves exactly room for the envelope and the PUBLISH header', () => {
    const deviceId = 'pi-kitchen-07';
    const limit = maxExampleBytes(64 * 1024, deviceId);
    const fits = exampleOfBytes(limit);
    expect(rowBytes(fits)).toBe(limit);
    // At the limit the packet is within 64 KiB, at most 3 bytes short (the remaining-length field is counted at its 4-byte maximum).
    expect(packetBytes(deviceId, fits)).toBeLessThanOrEqual(64 * 1024);
    expect(packetBytes(deviceId, fits)).toBeGreaterThanOrEqual(64 * 1024 - 3);
    expect(publishOverheadBytes(deviceId)).toBe(1 + 4 + 2 + `apprentice/v1/devices/${deviceId}/examples`.length + 2);
  });

  it('Outbox.add refuses an example above the limit, logs it with the cause and counts it as dropped', async () => {
    const { log, lines } = captureLogger();
    const limit = maxExampleBytes(64 * 1024, 'dev-1');
    const o = await openOutbox({ maxExampleBytes: limit, log });
    const ok = exampleOfBytes(limit);
    const big = exampleOfBytes(limit + 1);
    expect(o.add(ok)).toEqual({ status: 'added', evicted: 0 });
    expect(o.add(big)).toEqual({ status: 'dropped', cause: 'oversized' });
    expect(o.stats()).toMatchObject({ depth: 1, selected: 2, dropped: 1 });
    expect(o.peek({ limit: 10 }).map((r) => r.id)).toEqual([ok.id]);
    const line = lines().find((l) => l.msg === 'outbox dropped example');
    expect(line).toMatchObject({ id: big.id, cause: 'oversized', bytes: limit + 1, maxExampleBytes: limit });
  });

  it('an oversized example in a batch is refused alone; the rest of the batch is stored', async () => {
    const limit = 4096;
    const o = await openOutbox({ maxExampleBytes: limit });
    const res = o.addBatch([makeExample(), exampleOfBytes(limit + 100), makeExample()]);
    expect(res.map((r) => r.status)).toEqual(['added', 'dropped', 'added']);
    expect(o.stats()).toMatchObject({ depth: 2, selected: 3, dropped: 1 });
  });

  it('the counter survives a restart', async () => {
    const path = join(tmp.dir, 'restart.db');
    const a = await Outbox.create({ path, maxRows: 10, maxBytes: 1 << 20, maxExampleBytes: 2048 });
    a.add(exampleOfBytes(3000));
    a.dispose();
    const b = await Outbox.create({ path, maxRows: 10, maxBytes: 1 << 20, maxExampleBytes: 2048 });
    open.push(b);
    expect(b.counters().dropped).toBe(1);
  });

  it('refuses a nonsensical limit', async () => {
    await expect(openOutbox({ maxExampleBytes: 0 })).rejects.toThrow(OutboxError);
    await expect(openOutbox({ maxExampleBytes: 1.5 })).rejects.toThrow(/maxExampleBytes must be a positive integer/);
  });
});

describe('Outbox.addBatch', () => {
  it('gives the same results and state as one add at a time, eviction included', async () => {
    const seq = await openOutbox({ maxRows: 4 });
    const bat = await openOutbox({ maxRows: 4 });
    const es = [...Array.from({ length: 3 }, () => makeExample('audit')), ...Array.from({ length: 3 }, () => makeExample('low_margin')), makeExample('audit')];
    const one = es.map((e) => seq.add(e));
    const many = bat.addBatch(es);
    expect(many).toEqual(one);
    expect(bat.stats()).toEqual(seq.stats());
    expect(bat.peek({ limit: 10 }).map((r) => r.id)).toEqual(seq.peek({ limit: 10 }).map((r) => r.id));
  });

  it('an invalid example throws before anything of the batch is written', async () => {
    const o = await openOutbox();
    expect(() => o.addBatch([makeExample(), { ...makeExample(), output: [] }])).toThrow(OutboxError);
    expect(o.stats()).toMatchObject({ depth: 0, selected: 0 });
  });

  it('a duplicate inside one batch is stored once', async () => {
    const o = await openOutbox();
    const e = makeExample();
    expect(o.addBatch([e, e]).map((r) => r.status)).toEqual(['added', 'duplicate']);
    expect(o.depth()).toBe(1);
  });
});
