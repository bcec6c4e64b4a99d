/**
 * Issue 9 receipts, cloud side: per example id, `stored` only after the commit (duplicates too),
 * `refused` for good with the reason, `deferred` from the admit hook; one bad example does not sink its
 * batch; a payload with no readable id is refused by its batch id.
 */
import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Ingest } from '../../../cloud/fleet/ingest.js';
import { examples } from '../../../cloud/registry/schema.js';
import { MAX_INPUT_ELEMENTS, receiptSchema, type Receipt } from '../../../shared/protocol/index.js';
import { FleetFixture, examplesPayload } from './fixtures.js';

describe('Ingest receipts', () => {
  let fx: FleetFixture;
  let ingest: Ingest;
  let sent: { deviceId: string; receipt: Receipt; storedRows: number }[];
  let deferIds: Set<string>;

  beforeEach(async () => {
    fx = new FleetFixture();
    fx.addDevice('pi-1');
    fx.addDevice('gone', { revoked: true });
    sent = [];
    deferIds = new Set();
    const storedRows = () => fx.db.select({ id: examples.id }).from(examples).all().length;
    ingest = await Ingest.create({
      registry: fx.registry,
      receipts: (deviceId, receipt) => sent.push({ deviceId, receipt: receiptSchema.parse(receipt), storedRows: storedRows() }),
      admit: (_d, ids) => new Map(ids.filter((id) => deferIds.has(id)).map((id) => [id, 30])),
    });
  });
  afterEach(async () => {
    await ingest.dispose();
    fx.dispose();
  });

  it('stored only after the commit, and again for a redelivered batch', async () => {
    const b = examplesPayload('pi-1', 4);
    const p = ingest.handleMessage('examples', 'pi-1', b.payload);
    expect(sent).toHaveLength(0);
    await p;
    expect(sent).toHaveLength(1);
    expect(sent[0]!.storedRows).toBe(4);
    expect(sent[0]!.receipt).toMatchObject({ kind: 'examples', deviceId: 'pi-1', stored: b.ids, refused: [], deferred: [] });
    await ingest.handleMessage('examples', 'pi-1', b.payload);
    expect(sent[1]!.receipt).toMatchObject({ kind: 'examples', stored: b.ids });
  });

  it('refuses bad examples one by one (malformed, oversized) and stores the rest', async () => {
    const b = examplesPayload('pi-1', 3);
    const doc = JSON.parse(b.payload.toString()) as { examples: { input: string }[] };
    doc.examples[0]!.input = 'AAAAAAA='; // 5 bytes, not float32
    doc.examples[1]!.input = Buffer.alloc((MAX_INPUT_ELEMENTS + 1) * 4).toString('base64');
    await ingest.handleMessage('examples', 'pi-1', Buffer.from(JSON.stringify(doc)));
    const r = sent[0]!.receipt as Extract<Receipt, { kind: 'examples' }>;
    expect(r.stored).toEqual([b.ids[2]]);
    expect(r.refused.map((e) => [e.id, e.reason])).toEqual([
      [b.ids[0], 'malformed'],
      [b.ids[1], 'oversized'],
    ]);
    expect(fx.db.select().from(examples).all().map((e) => e.id)).toEqual([b.ids[2]]);
  });

  it('defers what the admit hook defers, without storing it', async () => {
    const b = examplesPayload('pi-1', 3);
    deferIds.add(b.ids[1]!);
    await ingest.handleMessage('examples', 'pi-1', b.payload);
    expect(sent[0]!.receipt).toMatchObject({ stored: [b.ids[0], b.ids[2]], deferred: [{ id: b.ids[1], retryAfterSeconds: 30 }] });
    expect(fx.db.select().from(examples).all()).toHaveLength(2);
  });

  it('refuses by batch id what has no readable example id, and a revoked device\'s batches; unreadable bytes get nothing', async () => {
    const batchId = randomUUID();
    await expect(ingest.handleMessage('examples', 'pi-1', Buffer.from(JSON.stringify({ v: 1, deviceId: 'pi-1', batchId, examples: [{ nope: 1 }] })))).resolves.toBeUndefined();
    expect(sent.at(-1)!.receipt).toMatchObject({ kind: 'batch', batchId, refused: { reason: 'malformed' } });
    await ingest.handleMessage('examples', 'pi-1', Buffer.from(JSON.stringify({ v: 1, deviceId: 'pi-2', batchId, examples: [] })));
    expect(sent.at(-1)!.receipt).toMatchObject({ kind: 'batch', refused: { reason: 'malformed' } });
    const other = examplesPayload('pi-1', 1);
    await ingest.handleMessage('examples', 'pi-2', other.payload);
    await ingest.handleMessage('examples', 'gone', examplesPayload('gone', 2).payload);
    expect(sent.at(-1)).toMatchObject({ deviceId: 'gone', receipt: { kind: 'batch', refused: { reason: 'revoked' } } });
    const before = sent.length;
    await ingest.handleMessage('examples', 'pi-1', Buffer.from([0xff, 0x00]));
    expect(sent).toHaveLength(before);
  });
});
