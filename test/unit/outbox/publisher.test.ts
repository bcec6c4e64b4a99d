import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Outbox, OutboxPublisher, createBackoff, type PublishClient } from '../../../edge/outbox/index.js';
import { OVERTAKEN_GRACE_MS } from '../../../edge/outbox/publisher.js';
import { decodePayload, examplesBatchSchema, topics } from '../../../shared/protocol/index.js';
import { makeExample, tempDir } from './helpers.js';

/** Records publishes; the test decides when (and whether) each is acknowledged. */
class FakeClient extends EventEmitter implements PublishClient {
  connected = false;
  sent: { topic: string; qos: number; cb: (err?: Error) => void; batch: ReturnType<typeof decode> }[] = [];
  publish(topic: string, message: Buffer, opts: { qos: 1 }, cb: (err?: Error) => void): this {
    this.sent.push({ topic, qos: opts.qos, cb, batch: decode(message) });
    return this;
  }
  up(): void {
    this.connected = true;
    this.emit('connect');
  }
  down(): void {
    this.connected = false;
    this.emit('close');
  }
}
const decode = (m: Buffer) => decodePayload(examplesBatchSchema, m);

const DEVICE = 'dev-unit-1';
let tmp: ReturnType<typeof tempDir>;
let outbox: Outbox;
let client: FakeClient;
let pub: OutboxPublisher;
/** setImmediate stays real (the publisher coalesces wake-ups with it); one turn runs the queued pump. */
const flush = () => new Promise<void>((resolve) => setImmediate(resolve));

function publisher(extra: Partial<ConstructorParameters<typeof OutboxPublisher>[0]> = {}) {
  pub = new OutboxPublisher({ outbox, client, deviceId: DEVICE, backoff: { initialMs: 1000, maxMs: 8000, random: () => 0 }, ackTimeoutMs: 30_000, ...extra });
  return pub;
}

beforeEach(async () => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
  tmp = tempDir();
  outbox = await Outbox.create({ path: join(tmp.dir, 'o.db'), maxRows: 10_000, maxBytes: 50_000_000 });
  client = new FakeClient();
});
afterEach(async () => {
  await pub?.stop();
  outbox.dispose();
  tmp.cleanup();
  vi.useRealTimers();
});

describe('OutboxPublisher', () => {
  it('publishes only while connected, at QoS 1 to the device examples topic, and deletes rows only on ack', async () => {
    const es = [makeExample(), makeExample('audit'), makeExample('feedback')];
    for (const e of es) outbox.add(e);
    publisher().start();
    await flush();
    expect(client.sent).toHaveLength(0); // offline: nothing handed to MQTT.js

    client.up();
    await flush();
    expect(client.sent).toHaveLength(1);
    const [first] = client.sent;
    expect(first!.topic).toBe(topics.examples(DEVICE));
    expect(first!.qos).toBe(1);
    expect(first!.batch).toMatchObject({ v: 1, deviceId: DEVICE });
    expect(first!.batch.examples).toEqual(es);
    expect(outbox.depth()).toBe(3); // written, not acknowledged
    expect(pub.stats().inFlight).toBe(3);

    outbox.add(makeExample());
    await vi.advanceTimersByTimeAsync(10_000);
    expect(client.sent).toHaveLength(1); // the in-flight batch is not re-sent, no second batch meanwhile

    first!.cb();
    await flush();
    expect(outbox.counters().published).toBe(3);
    expect(client.sent).toHaveLength(2); // the row added meanwhile
    client.sent[1]!.cb();
    await flush();
    expect(pub.depth()).toBe(0);
    expect(pub.counters()).toMatchObject({ selected: 4, published: 4 });
    expect(pub.stats()).toMatchObject({ batches: 2, failures: 0, inFlight: 0 });
  });

  it('splits into batches by count and by bytes', async () => {
    for (let i = 0; i < 150; i++) outbox.add(makeExample('low_margin', 64));
    publisher({ maxBatchExamples: 64 }).start();
    client.up();
    const sizes: number[] = [];
    for (let i = 0; i < 5 && pub.depth() > 0; i++) {
      await flush();
      const last = client.sent.at(-1)!;
      sizes.push(last.batch.examples.length);
      last.cb();
    }
    expect(sizes).toEqual([64, 64, 22]);

    for (let i = 0; i < 20; i++) outbox.add(makeExample('low_margin', 256));
    await pub.stop();
    client = new FakeClient();
    publisher({ maxBatchBytes: 8 * 1024 }).start();
    client.up();
    await flush();
    const b = client.sent[0]!;
    expect(Buffer.byteLength(JSON.stringify(b.batch))).toBeLessThanOrEqual(8 * 1024);
    expect(b.batch.examples.length).toBeGreaterThan(1);
    expect(b.batch.examples.length).toBeLessThan(20);
  });

  it('on a publish error, retries the same rows with a new batchId after exponential backoff, reset by success', async () => {
    for (let i = 0; i < 3; i++) outbox.add(makeExample());
    publisher().start();
    client.up();
    await flush();
    // random() = 0 → half the ceiling: 500, 1000, 2000, 4000, then capped at 8000/2.
    for (const d of [500, 1000, 2000, 4000, 4000]) {
      const n = client.sent.length;
      client.sent.at(-1)!.cb(new Error('boom'));
      await vi.advanceTimersByTimeAsync(d - 1);
      await flush();
      expect(client.sent.length).toBe(n);
      await vi.advanceTimersByTimeAsync(1);
      await flush();
      expect(client.sent.length).toBe(n + 1);
    }
    const batchIds = new Set(client.sent.map((s) => s.batch.batchId));
    expect(batchIds.size).toBe(6);
    for (const s of client.sent) expect(s.batch.examples.map((e) => e.id)).toEqual(client.sent[0]!.batch.examples.map((e) => e.id));
    expect(outbox.depth()).toBe(3);
    expect(pub.stats().failures).toBe(5);

    client.sent.at(-1)!.cb();
    await flush();
    expect(outbox.depth()).toBe(0);
    outbox.add(makeExample());
    await flush();
    const n = client.sent.length;
    client.sent.at(-1)!.cb(new Error('again'));
    await vi.advanceTimersByTimeAsync(499);
    await flush();
    expect(client.sent.length).toBe(n);
    await vi.advanceTimersByTimeAsync(1);
    await flush();
    expect(client.sent.length).toBe(n + 1); // backoff was reset by the success
  });

  it('keeps the in-flight batch across a disconnect (MQTT.js resends it) and does not time it out while offline', async () => {
    outbox.add(makeExample());
    publisher({ ackTimeoutMs: 5000 }).start();
    client.up();
    await flush();
    client.down();
    await vi.advanceTimersByTimeAsync(60_000);
    client.up();
    await vi.advanceTimersByTimeAsync(4000);
    expect(client.sent).toHaveLength(1); // we did not publish it again
    client.sent[0]!.cb(); // PUBACK of MQTT.js's resend
    await flush();
    expect(outbox.depth()).toBe(0);
    expect(pub.stats().failures).toBe(0);
  });

  it('resends rows when no PUBACK comes in time; a late PUBACK still deletes them, counted once', async () => {
    const es = [makeExample(), makeExample()];
    for (const e of es) outbox.add(e);
    publisher({ ackTimeoutMs: 5000 }).start();
    client.up();
    await flush();
    await vi.advanceTimersByTimeAsync(5000 + 500);
    await flush();
    expect(client.sent).toHaveLength(2);
    expect(client.sent[1]!.batch.batchId).not.toBe(client.sent[0]!.batch.batchId);
    expect(client.sent[1]!.batch.examples).toEqual(client.sent[0]!.batch.examples);
    client.sent[0]!.cb(); // late ack of the abandoned batch
    await flush();
    expect(outbox.depth()).toBe(0);
    client.sent[1]!.cb();
    await flush();
    expect(outbox.counters().published).toBe(2);
    expect(client.sent).toHaveLength(2);
  });

  it('a reconnect cancels a pending backoff and resumes at once', async () => {
    outbox.add(makeExample());
    publisher({ backoff: { initialMs: 60_000, maxMs: 60_000, random: () => 0 } }).start();
    client.up();
    await flush();
    client.down();
    client.sent[0]!.cb(new Error('Connection closed'));
    await vi.advanceTimersByTimeAsync(1000);
    client.up();
    await flush();
    expect(client.sent).toHaveLength(2);
  });

  it('stop() halts publishing; rows stay for the next start', async () => {
    outbox.add(makeExample());
    publisher().start();
    client.up();
    await flush();
    await pub.stop();
    client.sent[0]!.cb(new Error('x'));
    outbox.add(makeExample());
    await vi.advanceTimersByTimeAsync(60_000);
    expect(client.sent).toHaveLength(1);
    expect(outbox.depth()).toBe(2);
    publisher().start();
    await flush();
    expect(client.sent).toHaveLength(2);
    expect(client.sent[1]!.batch.examples).toHaveLength(2);
  });

  it('refuses an invalid device id at construction', () => {
    expect(() => new OutboxPublisher({ outbox, client, deviceId: 'a/+' })).toThrow(/invalid device id/);
  });
});

describe('createBackoff', () => {
  it('uses equal jitter within [c/2, c) and caps c', () => {
    const hi = createBackoff({ initialMs: 100, maxMs: 1000, random: () => 0.999999 });
    const lo = createBackoff({ initialMs: 100, maxMs: 1000, random: () => 0 });
    expect(Array.from({ length: 6 }, () => lo.next())).toEqual([50, 100, 200, 400, 500, 500]);
    expect(Array.from({ length: 6 }, () => hi.next())).toEqual([99, 199, 399, 799, 999, 999]);
    lo.reset();
    expect(lo.next()).toBe(50);
  });
});

describe('OutboxPublisher with receipts (issue 9)', () => {
  const receipt = (batchId: string, r: { stored?: string[]; refused?: { id: string; reason: 'malformed' | 'oversized' }[]; deferred?: { id: string; retryAfterSeconds: number }[] }) =>
    Buffer.from(JSON.stringify({ v: 1, deviceId: DEVICE, at: new Date().toISOString(), batchId, kind: 'examples', stored: r.stored ?? [], refused: r.refused ?? [], deferred: r.deferred ?? [] }));

  it('a PUBACK deletes nothing; stored and refused receipts delete, deferred keeps and holds back; at most 4 batches wait', async () => {
    for (let i = 0; i < 12; i++) outbox.add(makeExample());
    publisher({ receipts: () => true, maxBatchExamples: 2, receiptTimeoutMs: 60_000 }).start();
    client.up();
    await flush();
    expect(client.sent).toHaveLength(4);
    for (const s of client.sent) s.cb();
    await flush();
    expect(outbox.depth()).toBe(12);
    expect(client.sent).toHaveLength(4);

    const [a, b, c] = client.sent.map((s) => s.batch);
    pub.handleReceipt(receipt(a!.batchId, { stored: a!.examples.map((e) => e.id) }));
    pub.handleReceipt(receipt(b!.batchId, { stored: [b!.examples[0]!.id], refused: [{ id: b!.examples[1]!.id, reason: 'oversized' }] }));
    pub.handleReceipt(receipt(c!.batchId, { stored: [c!.examples[0]!.id], deferred: [{ id: c!.examples[1]!.id, retryAfterSeconds: 30 }] }));
    await flush();
    expect(outbox.stats()).toMatchObject({ depth: 7, published: 4, dropped: 1, refused: 1 });
    // Three batches completed; the 4 rows not in flight nor deferred go out as 2 new batches, never the deferred row.
    expect(client.sent).toHaveLength(6);
    const deferredId = c!.examples[1]!.id;
    expect(client.sent.slice(4).flatMap((s) => s.batch.examples.map((e) => e.id))).not.toContain(deferredId);
    expect(pub.stats().badReceipts).toBe(0);
    pub.handleReceipt(Buffer.from('{"v":1}'));
    expect(pub.stats().badReceipts).toBe(1);
  });

  it('a valid receipt the store cannot apply (a failing disk) is not a bad receipt: rows kept, counted as a failure, settled by a later receipt', async () => {
    outbox.add(makeExample());
    publisher({ receipts: () => true, receiptTimeoutMs: 60_000 }).start();
    client.up();
    await flush();
    const batch = client.sent[0]!.batch;
    client.sent[0]!.cb();
    const Database = (await import('better-sqlite3')).default;
    const other = new Database(join(tmp.dir, 'o.db'));
    other.exec("CREATE TRIGGER refuse BEFORE DELETE ON outbox BEGIN SELECT RAISE(ABORT, 'disk says no'); END;");
    pub.handleReceipt(receipt(batch.batchId, { stored: [batch.examples[0]!.id] }));
    expect(pub.stats()).toMatchObject({ badReceipts: 0, failures: 1, depth: 1, published: 0 });
    other.exec('DROP TRIGGER refuse');
    other.close();
    // The cloud answers the resend (or the same receipt again): now the row leaves.
    pub.handleReceipt(receipt(batch.batchId, { stored: [batch.examples[0]!.id] }));
    expect(pub.stats()).toMatchObject({ badReceipts: 0, depth: 0, published: 1 });
  });

  it('without a receipt in time the rows go again in a new batch after the backoff; a late receipt still settles them', async () => {
    outbox.add(makeExample());
    publisher({ receipts: () => true, receiptTimeoutMs: 5_000, random: () => 0 }).start();
    client.up();
    await flush();
    const first = client.sent[0]!.batch;
    client.sent[0]!.cb();
    await vi.advanceTimersByTimeAsync(5_000);
    await flush();
    expect(pub.stats().failures).toBe(1);
    await vi.advanceTimersByTimeAsync(500); // backoff with random() = 0: half of 1000
    await flush();
    expect(client.sent).toHaveLength(2);
    expect(client.sent[1]!.batch.batchId).not.toBe(first.batchId);
    expect(client.sent[1]!.batch.examples[0]!.id).toBe(first.examples[0]!.id);
    pub.handleReceipt(receipt(first.batchId, { stored: [first.examples[0]!.id] }));
    await flush();
    expect(outbox.stats()).toMatchObject({ depth: 0, published: 1 });
    expect(pub.stats().inFlight).toBe(0);
  });

  it('starts sending after a connect only once its jittered delay has passed', async () => {
    outbox.add(makeExample());
    publisher({ receipts: () => true, connectJitterMs: 10_000, random: () => 0.5 }).start();
    client.up();
    await flush();
    expect(client.sent).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(4_999);
    await flush();
    expect(client.sent).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(1);
    await flush();
    expect(client.sent).toHaveLength(1);
  });

  it('each resend of the same rows waits twice as long (per-row backoff), never past the maximum', async () => {
    outbox.add(makeExample());
    publisher({ receipts: () => true, receiptTimeoutMs: 5_000, receiptTimeoutMaxMs: 15_000, random: () => 0, backoff: { initialMs: 1, maxMs: 1, random: () => 0 } }).start();
    client.up();
    await flush();
    const sentAt: number[] = [Date.now()];
    const waitForSend = async (n: number) => {
      while (client.sent.length < n) {
        await vi.advanceTimersByTimeAsync(100);
        await flush();
      }
      sentAt.push(Date.now());
    };
    await waitForSend(2);
    await waitForSend(3);
    await waitForSend(4);
    await waitForSend(5);
    const gaps = sentAt.slice(1).map((t, i) => t - sentAt[i]!);
    // 5 s, then 10 s, then 15 s (the maximum) twice; each gap includes up to 100 ms of polling and a 1 ms backoff.
    expect(gaps.map((g) => Math.round(g / 1000))).toEqual([5, 10, 15, 15]);
    expect(new Set(client.sent.map((s) => s.batch.examples[0]!.id)).size).toBe(1);
    expect(pub.stats()).toMatchObject({ receiptTimeouts: 4, depth: 1 });
  });

  it('waits at least 3x the observed receipt latency, and a slow receipt stretches batches already waiting', async () => {
    for (let i = 0; i < 2; i++) outbox.add(makeExample());
    publisher({ receipts: () => true, maxBatchExamples: 1, receiptTimeoutMs: 5_000, random: () => 0 }).start();
    client.up();
    await flush();
    expect(client.sent).toHaveLength(2);
    const [a, b] = client.sent.map((s) => s.batch);
    // A's receipt comes after 4 s (the cloud was draining a backlog): B, sent with A, now waits 12 s, not 5.
    await vi.advanceTimersByTimeAsync(4_000);
    pub.handleReceipt(receipt(a!.batchId, { stored: a!.examples.map((e) => e.id) }));
    expect(pub.stats().receiptLatencyMs).toBe(4_000);
    await vi.advanceTimersByTimeAsync(7_900);
    await flush();
    expect(pub.stats()).toMatchObject({ receiptTimeouts: 0, failures: 0 });
    await vi.advanceTimersByTimeAsync(200);
    await flush();
    expect(pub.stats().receiptTimeouts).toBe(1);
    // The late receipt of the released batch still settles the row and counts as a latency sample.
    pub.handleReceipt(receipt(b!.batchId, { stored: b!.examples.map((e) => e.id) }));
    expect(outbox.stats()).toMatchObject({ depth: 0, published: 2 });
    expect(pub.stats().receiptLatencyMs).toBeGreaterThanOrEqual(12_000);
  });

  it('a batch overtaken by the receipt of a later batch goes again after a short grace, not after its full wait', async () => {
    for (let i = 0; i < 2; i++) outbox.add(makeExample());
    publisher({ receipts: () => true, maxBatchExamples: 1, receiptTimeoutMs: 60_000, random: () => 0, backoff: { initialMs: 1, maxMs: 1, random: () => 0 } }).start();
    client.up();
    await flush();
    const [a, b] = client.sent.map((x) => x.batch);
    await vi.advanceTimersByTimeAsync(1_000);
    // B (sent after A) is receipted: the cloud consumed past A, whose receipt was lost.
    pub.handleReceipt(receipt(b!.batchId, { stored: b!.examples.map((e) => e.id) }));
    await vi.advanceTimersByTimeAsync(OVERTAKEN_GRACE_MS - 100);
    await flush();
    expect(client.sent).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(200);
    await flush();
    expect(client.sent).toHaveLength(3);
    expect(client.sent[2]!.batch.examples[0]!.id).toBe(a!.examples[0]!.id);
    expect(pub.stats().receiptTimeouts).toBe(1);
  });
});
