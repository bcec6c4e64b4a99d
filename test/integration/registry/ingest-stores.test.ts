/**
 * Ingest's stores on both registry dialects (issue 15): example batches committed in one transaction each
 * and acknowledged after it, deduplicated by UUID (before the commit and by ON CONFLICT), the rate cap's
 * deferrals, per-device counts persisted across a restart, batched status / telemetry with the telemetry
 * history sink, the device compatibility read, and unknown / revoked devices refused.
 */
import { eq } from 'drizzle-orm';
import { Registry as PromRegistry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { deviceCompatOf } from '../../../cloud/fleet/device-compat.js';
import { Ingest } from '../../../cloud/fleet/ingest.js';
import { addIngestCounts, loadIngestCounts, storedExampleIds } from '../../../cloud/fleet/ingest-counts.js';
import { TelemetryHistory, telemetrySeries } from '../../../cloud/fleet/telemetry-history.js';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import type { Receipt } from '../../../shared/protocol/index.js';
import { registryDialects } from '../../helpers/dialects.js';
import { examplesPayload, statusPayload, telemetryPayload } from '../../unit/fleet/fixtures.js';

const dialects = registryDialects();

describe.each(dialects)('ingest stores on $name', (d) => {
  let reg: StoreRegistry;
  let ingest: Ingest | undefined;
  const receipts: Receipt[] = [];
  beforeEach(async (ctx) => {
    reg = await d.open(ctx);
    receipts.length = 0;
    await reg.q.insert(reg.t.devices).values([
      { id: 'pi-1', groups: ['lab'], credentialHash: 'x' },
      { id: 'pi-2', groups: ['lab'], credentialHash: 'x' },
      { id: 'gone', groups: [], credentialHash: 'x', revoked: true },
    ]);
  });
  afterEach(async () => {
    await ingest?.stop();
    ingest = undefined;
    await d.close();
  });

  const start = async (o: Partial<Parameters<typeof Ingest.create>[0]> = {}) =>
    (ingest = await Ingest.create({ registry: reg, metrics: new PromRegistry(), receipts: (_id, r) => receipts.push(r), ...o }));
  const storedIds = async () => (await reg.q.select({ id: reg.t.examples.id }).from(reg.t.examples)).map((r) => r.id).sort();
  const device = async (id: string) => (await reg.q.select().from(reg.t.devices).where(eq(reg.t.devices.id, id)))[0]!;

  it('commits a batch before settling its promise, stores it once however often delivered, rows intact', async () => {
    // The batch waits up to flushMs for more: long enough that the read below always runs before the commit.
    const i = await start({ flushMs: 1000 });
    const b = examplesPayload('pi-1', 40, { size: 16, label: 1 });
    let settled = false;
    const first = Promise.resolve(i.handleMessage('examples', 'pi-1', b.payload)).then(() => void (settled = true));
    const again = i.handleMessage('examples', 'pi-1', b.payload); // queued before the first commit: ON CONFLICT dedupes it
    expect(await storedIds()).toEqual([]);
    expect(settled).toBe(false);
    await Promise.all([first, again]);
    expect(await storedIds()).toEqual([...b.ids].sort());
    await i.handleMessage('examples', 'pi-1', b.payload); // after the commit: found stored, no transaction
    expect(i.stats()).toMatchObject({ examplesInserted: 40, duplicates: 80, duplicatesSkipped: 40, batches: 3 });
    expect(receipts.map((r) => r.kind)).toEqual(['examples', 'examples', 'examples']);
    const [row] = await reg.q.select().from(reg.t.examples).where(eq(reg.t.examples.id, b.ids[3]!));
    expect(row).toMatchObject({ deviceId: 'pi-1', model: 'tiny', releaseSeq: 1, reason: 'feedback', label: 1, studentOutput: [0.45, 0.55] });
    expect(Buffer.compare(row!.input, Buffer.from(b.inputs[3]!.buffer))).toBe(0);
    expect(await storedExampleIds(reg, [b.ids[0]!, 'not-stored'])).toEqual(new Set([b.ids[0]]));
  });

  it('defers what the rate cap defers (stored ones are not charged again); counts persist across a restart', async () => {
    const asked: string[][] = [];
    const b = examplesPayload('pi-1', 3);
    await start({ admit: (_id, ids) => (asked.push([...ids]), new Map(ids.filter((x) => x === b.ids[1]).map((x) => [x, 30]))) });
    await ingest!.handleMessage('examples', 'pi-1', b.payload);
    expect(await storedIds()).toEqual([b.ids[0], b.ids[2]].sort());
    expect(receipts[0]).toMatchObject({ kind: 'examples', stored: [b.ids[0], b.ids[2]], deferred: [{ id: b.ids[1], retryAfterSeconds: 30 }] });
    await ingest!.handleMessage('examples', 'pi-1', b.payload);
    expect(asked).toEqual([b.ids, [b.ids[1]]]);
    await ingest!.handleMessage('examples', 'gone', examplesPayload('gone', 2).payload);
    expect(receipts.at(-1)).toMatchObject({ kind: 'batch', refused: { reason: 'revoked' } });
    await ingest!.stop();
    ingest = undefined;
    expect(Object.fromEntries(await loadIngestCounts(reg))).toEqual({ 'pi-1': { deferred: 2, refused: 0, labelsIgnored: 0 }, gone: { deferred: 0, refused: 2, labelsIgnored: 0 } });
    await addIngestCounts(reg, new Map([['pi-1', { deferred: 1, refused: 4, labelsIgnored: 5 }]]), new Date());
    const again = await start();
    expect(again.deviceCounts()['pi-1']).toEqual({ deferred: 3, refused: 4, labelsIgnored: 5 });
  });

  it('status and telemetry: batched into one transaction, in arrival order, with the telemetry history in it', async () => {
    const i = await start({ stateFlushMs: 1_000_000 });
    i.deviceState!.addSink(new TelemetryHistory().sink);
    const went: boolean[] = [];
    i.on('status', (s) => went.push(s.wentOnline));
    const sha = 'b'.repeat(64);
    void i.handleMessage('status', 'pi-1', statusPayload('pi-1', 4, sha), true);
    void i.handleMessage('status', 'pi-1', statusPayload('pi-1', null, null, 'offline'));
    void i.handleMessage('status', 'pi-1', statusPayload('pi-1', 4, sha));
    void i.handleMessage('telemetry', 'pi-2', telemetryPayload('pi-2', 1, 'degraded'));
    void i.handleMessage('status', 'stranger', statusPayload('stranger', 1));
    expect(await i.flush()).toBe(true);
    expect(went).toEqual([true, false, true]);
    expect(await device('pi-1')).toMatchObject({ online: true, runningSeq: 4, runningSha256: sha });
    expect(await device('pi-2')).toMatchObject({ health: 'degraded', lastTelemetry: expect.objectContaining({ health: 'degraded' }) });
    expect(await telemetrySeries(reg, 'pi-2', { resolution: '1m' })).toEqual([expect.objectContaining({ samples: 1 })]);
    expect(i.stats().unknownDevice).toBe(1);
    expect(await deviceCompatOf(reg, 'pi-1')).toEqual({ protocolVersion: 1, capabilities: new Set() });
  });
});
