import { eq } from 'drizzle-orm';
import { Registry as PromRegistry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Ingest, type FleetSignalMap } from '../../../cloud/fleet/ingest.js';
import { examples, rolloutDevices, rollouts } from '../../../cloud/registry/schema.js';
import { base64ToFloat32 } from '../../../shared/protocol/index.js';
import { FleetFixture, MODEL, eventPayload, examplesPayload, statusPayload, telemetryPayload } from './fixtures.js';

describe('Ingest', async () => {
  let fx: FleetFixture;
  let ingest: Ingest;
  let metrics: PromRegistry;

  beforeEach(async () => {
    fx = new FleetFixture();
    fx.addDevice('pi-1');
    fx.addDevice('pi-2');
    fx.addDevice('gone', { revoked: true, online: false });
    metrics = new PromRegistry();
    ingest = await Ingest.create({ registry: fx.registry, metrics, flushMs: 5 });
  });
  afterEach(async () => {
    await ingest.dispose();
    fx.dispose();
  });

  it('stores a batch once, however often it is delivered', async () => {
    const b = examplesPayload('pi-1', 64, { size: 784, label: 3 });
    void ingest.handleMessage('examples', 'pi-1', b.payload);
    void ingest.handleMessage('examples', 'pi-1', b.payload);
    await ingest.flush();
    await ingest.handleMessage('examples', 'pi-1', b.payload); // a later redelivery, another transaction
    await ingest.flush();
    const rows = fx.db.select().from(examples).all();
    expect(rows).toHaveLength(64);
    expect(new Set(rows.map((r) => r.id))).toEqual(new Set(b.ids));
    expect(ingest.stats()).toMatchObject({ examplesInserted: 64, duplicates: 128, malformed: 0, batches: 3 });

    const row = fx.db.select().from(examples).where(eq(examples.id, b.ids[5]!)).get()!;
    expect(row.input.byteLength).toBe(784 * 4);
    expect(Array.from(base64ToFloat32(row.input.toString('base64')))).toEqual(Array.from(b.inputs[5]!));
    expect(row).toMatchObject({ deviceId: 'pi-1', model: MODEL, releaseSeq: 1, reason: 'feedback', label: 3, studentOutput: [0.45, 0.55] });
    expect(row.capturedAt).toMatch(/^\d{4}-\d\d-\d\dT/);
  });

  it('coalesces batches arriving within the window into one transaction', async () => {
    for (let i = 0; i < 5; i++) void ingest.handleMessage('examples', 'pi-1', examplesPayload('pi-1', 8).payload);
    expect(fx.db.select().from(examples).all()).toHaveLength(0);
    await new Promise((r) => setTimeout(r, 30));
    expect(fx.db.select().from(examples).all()).toHaveLength(40);
    expect(ingest.stats()).toMatchObject({ flushes: 1, examplesInserted: 40 });
  });

  it('counts every kind of bad message and never throws', async () => {
    const good = examplesPayload('pi-1', 2);
    const cases: [Parameters<Ingest['handleMessage']>[0], string, Buffer][] = [
      ['examples', 'pi-1', Buffer.from([0xff, 0x00, 0x13, 0x37])], // garbage bytes
      ['examples', 'pi-1', Buffer.alloc(0)], // empty
      ['examples', 'pi-1', Buffer.from('{"v":1,"deviceId":"pi-1"}')], // wrong schema
      ['examples', 'pi-1', Buffer.from(good.payload.toString().replace('"v":1', '"v":1,"extra":true'))], // unknown key (strict)
      ['examples', 'pi-2', good.payload], // payload names pi-1, topic pi-2
      ['examples', 'pi-1', Buffer.from(good.payload.toString().replace(/"input":"[^"]*"/, '"input":"AAAAAAA="'))], // 5 bytes, not float32
      ['status', 'pi-1', Buffer.from('null')],
      ['status', 'pi-2', statusPayload('pi-1', 1)],
      ['telemetry', 'pi-1', Buffer.from('{"health":"ok"}')],
      ['telemetry', 'pi-1', Buffer.from('[1,2,3')],
      ['events', 'pi-1', Buffer.from(eventPayload('pi-1', 'installed', 1).toString().replace('installed', 'exploded'))],
      ['events', 'pi-2', eventPayload('pi-1', 'installed', 1)],
    ];
    for (const [kind, id, payload] of cases) await expect(ingest.handleMessage(kind, id, payload)).resolves.toBeUndefined();
    // Unknown and revoked devices: counted, ignored, even when the payload is fine.
    await ingest.handleMessage('examples', 'stranger', examplesPayload('stranger', 1).payload);
    await ingest.handleMessage('status', 'gone', statusPayload('gone', 1));
    await ingest.handleMessage('telemetry', 'stranger', Buffer.from('garbage'));
    await ingest.flush();
    // Validation is per example (issue 9): in the 5-byte case the other, valid example is stored.
    expect(ingest.stats()).toMatchObject({ malformed: cases.length, unknownDevice: 3, examplesInserted: 1, batches: 1 });
    expect(fx.db.select().from(examples).all().map((r) => r.id)).toEqual([good.ids[1]]);
    expect(fx.device('gone')!.online).toBe(false);
    const text = await metrics.metrics();
    expect(text).toMatch(/apprentice_cloud_ingest_messages_total\{kind="examples",result="malformed"\} 6/);
    expect(text).toMatch(/apprentice_cloud_ingest_messages_total\{kind="examples",result="unknown_device"\} 1/);
    // Still healthy afterwards.
    await ingest.handleMessage('examples', 'pi-1', good.payload);
    await ingest.flush();
    expect(ingest.stats().examplesInserted).toBe(2);
  });

  it('status and telemetry update the device row, batched, signalling after the commit', async () => {
    const seen: FleetSignalMap['status'][0][] = [];
    ingest.on('status', (s) => seen.push(s));
    const sha = 'a'.repeat(64);
    await ingest.handleMessage('status', 'pi-1', statusPayload('pi-1', 4, sha), true);
    // Batched: nothing is written or signalled before the writer's commit.
    expect(fx.device('pi-1')).toMatchObject({ runningSeq: null });
    expect(seen).toHaveLength(0);
    await ingest.flush();
    expect(fx.device('pi-1')).toMatchObject({ online: true, runningSeq: 4, runningSha256: sha });
    expect(fx.device('pi-1')!.lastSeen).toBeTruthy();
    expect(seen[0]).toMatchObject({ deviceId: 'pi-1', retain: true });

    // The last will is offline: online flips, the running release is kept (the will is stale by design).
    await ingest.handleMessage('status', 'pi-1', statusPayload('pi-1', null, null, 'offline'));
    await ingest.flush();
    expect(fx.device('pi-1')).toMatchObject({ online: false, runningSeq: 4 });
    await ingest.handleMessage('status', 'pi-1', statusPayload('pi-1', 4, sha));
    await ingest.flush();
    expect(seen.at(-1)!.wentOnline).toBe(true);

    await ingest.handleMessage('telemetry', 'pi-1', telemetryPayload('pi-1', 4, 'degraded'));
    await ingest.flush();
    expect(fx.device('pi-1')!.lastTelemetry).toMatchObject({ release: 4, health: 'degraded' });
    // An empty retained status (a cleared topic) is not a message at all.
    await ingest.handleMessage('status', 'pi-1', Buffer.alloc(0), true);
    expect(ingest.stats().malformed).toBe(0);
  });

  it('events move the device row of its active rollout and signal the engine', async () => {
    fx.addRelease(1);
    fx.addRelease(2, { parent: 1 });
    fx.db.insert(rollouts).values({ id: 'r1', model: MODEL, releaseSeq: 2, target: { kind: 'all' }, canaryShare: 0.5, soakSeconds: 0, failureThreshold: 0, state: 'canary' }).run();
    fx.db.insert(rolloutDevices).values([
      { rolloutId: 'r1', deviceId: 'pi-1', canary: true, state: 'desired' },
      { rolloutId: 'r1', deviceId: 'pi-2', canary: false, state: 'waiting' },
    ]).run();
    const signals: FleetSignalMap['event'][0][] = [];
    ingest.on('event', (e) => signals.push(e));
    const row = (id: string) => fx.db.select().from(rolloutDevices).where(eq(rolloutDevices.deviceId, id)).get()!;

    await ingest.handleMessage('events', 'pi-1', eventPayload('pi-1', 'rejected', 1, 'stale_release')); // another release: ignored
    expect(row('pi-1').state).toBe('desired');
    await ingest.handleMessage('events', 'pi-1', eventPayload('pi-1', 'installed', 2));
    expect(row('pi-1').state).toBe('installed');
    // A redelivered desired refused as stale never undoes `installed`.
    await ingest.handleMessage('events', 'pi-1', eventPayload('pi-1', 'rejected', 2, 'stale_release'));
    expect(row('pi-1').state).toBe('installed');
    await ingest.handleMessage('events', 'pi-1', eventPayload('pi-1', 'rolled_back', 2, 'nan_output'));
    expect(row('pi-1')).toMatchObject({ state: 'failed', reason: 'nan_output' });
    // A device that was never given the release cannot report on it.
    await ingest.handleMessage('events', 'pi-2', eventPayload('pi-2', 'installed', 2));
    expect(row('pi-2').state).toBe('waiting');

    expect(signals.map((s) => s.applied?.to ?? null)).toEqual([null, 'installed', null, 'failed', null]);
    expect(fx.device('pi-1')!.lastSeen).toBeTruthy();
  });
});
