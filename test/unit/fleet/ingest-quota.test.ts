/**
 * Issue 10 item 5, ingest side: a per-device rate cap defers (never refuses) what is over it, with a
 * retry time after which the same examples are stored; a redelivered batch takes no room; the counts
 * per device are kept across a restart; a label is kept only on a `feedback` row.
 */
import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Ingest } from '../../../cloud/fleet/ingest.js';
import { IngestQuota } from '../../../cloud/fleet/ingest-quota.js';
import { examples } from '../../../cloud/registry/schema.js';
import { receiptSchema, type ExampleReceipt, type Receipt } from '../../../shared/protocol/index.js';
import { FleetFixture, examplesPayload } from './fixtures.js';

describe('per-device ingest rate cap', () => {
  let fx: FleetFixture;
  let ingest: Ingest;
  let quota: IngestQuota;
  let sent: Receipt[];
  let clock: number;

  beforeEach(async () => {
    fx = new FleetFixture();
    fx.addDevice('flood');
    fx.addDevice('honest');
    sent = [];
    clock = Date.parse('2030-01-01T00:00:00Z');
    // 60 a minute (one a second), bursts of 10.
    quota = new IngestQuota({ perMinute: 60, burst: 10, now: () => clock });
    ingest = await Ingest.create({ registry: fx.registry, receipts: (_d, r) => sent.push(receiptSchema.parse(r)), admit: quota.admit });
  });
  afterEach(async () => {
    await ingest.dispose();
    fx.dispose();
  });

  const stored = (device: string) => fx.db.select({ d: examples.deviceId }).from(examples).all().filter((r) => r.d === device).length;
  const last = () => sent.at(-1) as ExampleReceipt;

  it('defers what is over the cap with a retry time, and stores it when sent again after that time', async () => {
    const b = examplesPayload('flood', 25);
    await ingest.handleMessage('examples', 'flood', b.payload);
    expect(last().stored).toHaveLength(10);
    expect(last().refused).toEqual([]);
    expect(last().deferred).toHaveLength(15);
    // The k-th example over the cap can come back after k seconds at one a second.
    expect(last().deferred.map((d) => d.retryAfterSeconds)).toEqual(Array.from({ length: 15 }, (_, i) => i + 1));
    expect(stored('flood')).toBe(10);
    const deferredIds = new Set(last().deferred.map((d) => d.id));

    // Another device is not affected by the flood.
    await ingest.handleMessage('examples', 'honest', examplesPayload('honest', 8).payload);
    expect(last().stored).toHaveLength(8);

    // The outbox sends what is still deferred again, under a new batch id.
    const resend = (ids: Set<string>): Promise<void> | undefined => {
      const doc = JSON.parse(b.payload.toString()) as { examples: { id: string }[]; batchId: string };
      doc.examples = doc.examples.filter((e) => ids.has(e.id));
      doc.batchId = randomUUID();
      return ingest.handleMessage('examples', 'flood', Buffer.from(JSON.stringify(doc)));
    };
    // Too early: deferred again, nothing lost, nothing stored.
    await resend(deferredIds);
    expect(last().deferred).toHaveLength(15);
    // 12 s later, 12 tokens accrued, but the bucket holds at most the burst (10).
    clock += 12_000;
    await resend(deferredIds);
    expect(last().stored).toHaveLength(10);
    expect(last().deferred).toHaveLength(5);
    clock += Math.max(...last().deferred.map((d) => d.retryAfterSeconds)) * 1000;
    await resend(new Set(last().deferred.map((d) => d.id)));
    expect(last().deferred).toEqual([]);
    expect(last().stored).toHaveLength(5);
    expect(stored('flood')).toBe(25);

    expect(ingest.deviceCounts()).toEqual({ flood: { deferred: 35, refused: 0, labelsIgnored: 0 } });
  });

  it('counts refusals per device and keeps labels only on feedback rows', async () => {
    const labelled = examplesPayload('honest', 3, { label: 1, reason: 'low_margin' }); // not feedback: the label is dropped
    await ingest.handleMessage('examples', 'honest', labelled.payload);
    const doc = JSON.parse(examplesPayload('honest', 2, { label: 4 }).payload.toString()) as { examples: { reason: string; input: string }[] };
    doc.examples[1]!.input = 'AAAAAAA='; // malformed: refused
    await ingest.handleMessage('examples', 'honest', Buffer.from(JSON.stringify(doc)));
    const rows = fx.db.select({ label: examples.label, reason: examples.reason }).from(examples).all();
    expect(rows.filter((r) => r.label !== null)).toEqual([{ label: 4, reason: 'feedback' }]);
    expect(ingest.deviceCounts()).toEqual({ honest: { deferred: 0, refused: 1, labelsIgnored: 3 } });
  });

  it('a redelivered batch is not charged against the rate cap again (its examples are already stored)', async () => {
    const b = examplesPayload('flood', 6);
    await ingest.handleMessage('examples', 'flood', b.payload);
    expect(last()).toMatchObject({ stored: expect.any(Array), deferred: [] });
    // The PUBACK was lost: the same batch comes again. All 6 are stored; none takes a token.
    await ingest.handleMessage('examples', 'flood', b.payload);
    expect(last().stored).toHaveLength(6);
    expect(last().deferred).toEqual([]);
    // So the 4 tokens left of the burst of 10 still take 4 new examples.
    await ingest.handleMessage('examples', 'flood', examplesPayload('flood', 5).payload);
    expect(last().stored).toHaveLength(4);
    expect(last().deferred).toHaveLength(1);
    expect(stored('flood')).toBe(10);
  });

  it('per-device counts survive a cloud restart (registry table device_ingest_counts)', async () => {
    await ingest.handleMessage('examples', 'flood', examplesPayload('flood', 14).payload); // 4 deferred
    await ingest.handleMessage('examples', 'honest', examplesPayload('honest', 2, { label: 1, reason: 'low_margin' }).payload);
    const before = ingest.deviceCounts();
    expect(before).toEqual({ flood: { deferred: 4, refused: 0, labelsIgnored: 0 }, honest: { deferred: 0, refused: 0, labelsIgnored: 2 } });
    await ingest.dispose(); // the restart: stop() writes what is counted
    ingest = await Ingest.create({ registry: fx.registry, receipts: (_d, r) => sent.push(receiptSchema.parse(r)), admit: quota.admit });
    expect(ingest.deviceCounts()).toEqual(before);
    await ingest.handleMessage('examples', 'flood', examplesPayload('flood', 3).payload); // the bucket is still empty: 3 more deferred
    expect(ingest.deviceCounts().flood).toEqual({ deferred: 7, refused: 0, labelsIgnored: 0 });
    await ingest.dispose();
    ingest = await Ingest.create({ registry: fx.registry });
    expect(ingest.deviceCounts().flood?.deferred).toBe(7);
  });

  it('rejects a nonsense configuration; 0 turns the cap off', () => {
    expect(() => new IngestQuota({ perMinute: -1, burst: 10 })).toThrow(/perMinute/);
    expect(() => new IngestQuota({ perMinute: 60, burst: 0 })).toThrow(/burst/);
    const off = new IngestQuota({ perMinute: 0, burst: 1 });
    expect(off.admit('d', Array.from({ length: 1000 }, (_, i) => String(i))).size).toBe(0);
  });
});
