import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { deviceCompatOf } from '../../../cloud/fleet/device-compat.js';
import { Ingest } from '../../../cloud/fleet/ingest.js';
import { CloudMqtt } from '../../../cloud/fleet/mqtt.js';
import { ReleasePublisher } from '../../../cloud/fleet/publisher.js';
import { deviceEvents, releases } from '../../../cloud/registry/schema.js';
import { rolloutShadowView } from '../../../cloud/rollouts/agreement.js';
import { RolloutEngine } from '../../../cloud/rollouts/engine.js';
import { assignWaves } from '../../../cloud/rollouts/policy.js';
import { shadowEvaluate, shadowRows } from '../../../cloud/shadow/evaluate.js';
import { recordShadowEval } from '../../../cloud/shadow/store.js';
import { Teacher } from '../../../cloud/teacher/ort-teacher.js';
import { topics } from '../../../shared/protocol/index.js';
import { RIGHT, TRAP, addExamples, shadowModels } from '../../fixtures/shadow-models.js';
import { brokerMatrix, waitFor, type TestBroker } from '../../helpers/broker.js';
import { FleetFixture, MODEL } from '../../unit/fleet/fixtures.js';
import { SimDevice, connectClient } from './device-sim.js';

/**
 * Agreement-gated waves (issue 13 item 3) end to end: a round's shadow evaluation (real ORT, real
 * registry) finds the candidate worse on pi-1's audit traffic; the rollout, over a real broker with
 * devices that verify and fetch what they are sent, holds pi-1 back on its release while pi-2 (same
 * wave) and pi-3 (no evidence) proceed, and the rollout completes.
 */
const IDS = ['pi-1', 'pi-2', 'pi-3'];

describe.each(brokerMatrix())('agreement gate over $name', ({ start, features }) => {
  let broker: TestBroker;
  let fx: FleetFixture;
  let models: { identity: Uint8Array; candidate: Uint8Array };
  const closers: (() => Promise<unknown>)[] = [];

  beforeAll(async () => {
    broker = await start();
    models = await shadowModels();
  });
  afterAll(async () => {
    await broker?.stop();
  });
  beforeEach(async () => {
    const c = await connectClient(broker.url, `cleaner-${randomUUID().slice(0, 6)}`);
    for (const id of IDS) {
      await c.publishAsync(topics.desired(id), Buffer.alloc(0), { qos: 1, retain: true });
      await c.publishAsync(topics.status(id), Buffer.alloc(0), { qos: 1, retain: true });
    }
    await c.endAsync();
    fx = new FleetFixture();
  });
  afterEach(async () => {
    for (const c of closers.splice(0).reverse()) await c();
    fx.dispose();
  });

  /** Release 1 (the identity) everywhere, candidate 2 from round `round-2`, evaluated on the devices' audit samples. */
  async function evaluatedRelease(): Promise<void> {
    fx.addRelease(1, { bytes: Buffer.from(models.identity) });
    fx.addRelease(2, { parent: 1, bytes: Buffer.from(models.candidate) });
    fx.db.update(releases).set({ roundId: 'round-2' }).where(eq(releases.seq, 2)).run();
    for (const id of IDS) fx.addDevice(id, { online: false, runningSeq: 1 });
    addExamples(fx.db, MODEL, 'pi-1', 40, RIGHT);
    addExamples(fx.db, MODEL, 'pi-1', 20, TRAP); // the candidate is wrong on a third of pi-1's traffic
    addExamples(fx.db, MODEL, 'pi-2', 60, RIGHT);
    addExamples(fx.db, MODEL, 'pi-3', 5, TRAP); // too few, alone in its cohort: no evidence
    writeFileSync(join(fx.dir, 'teacher.onnx'), models.identity);
    const teacher = await Teacher.create([join(fx.dir, 'teacher.onnx')]);
    try {
      const cohortOf = (d: string) => (d === 'pi-3' ? 'lab-b' : null);
      const e = await shadowEvaluate({ registry: fx.registry, dataDir: fx.dir, model: MODEL, teacher, candidate: models.candidate, inputSize: 2, classes: 2, perDevice: 100, minSamples: 50, cohortOf });
      expect(e.devices.map((d) => [d.deviceId, d.judgedBy])).toEqual([['pi-1', 'device'], ['pi-2', 'device'], ['pi-3', 'none']]);
      await recordShadowEval(fx.registry, 'round-2', MODEL, shadowRows(e));
    } finally {
      await teacher.dispose();
    }
  }

  it('holds back the device the candidate is worse for; the wave advances with the others; the rollout completes', async () => {
    await evaluatedRelease();
    const cloud = await CloudMqtt.create({ url: broker.url, clientId: `cloud-${randomUUID().slice(0, 8)}`, sharedSubscriptions: features.sharedSubscriptions, reconnectPeriod: 100 });
    const ingest = await Ingest.create({ registry: fx.registry, mqtt: cloud });
    closers.push(() => cloud.dispose(), () => ingest.dispose());
    const publisher = new ReleasePublisher({ mqtt: cloud, dataDir: fx.dir, compatOf: (id) => deviceCompatOf(fx.registry, id) });
    // A rollout id that puts pi-1 in the first wave with one other device (the waves are a hash of the id).
    const online = IDS.map((id) => ({ id, online: true }));
    const id = Array.from({ length: 200 }, (_, i) => `gate-${i}`).find((k) => {
      const w = assignWaves(k, online, [0.5, 1]);
      return w.get('pi-1') === 0 && w.get('pi-2') === 0;
    })!;
    const engine = await RolloutEngine.create({ registry: fx.registry, publisher, reissue: fx.reissue, signals: ingest, tickSeconds: 0.1, newId: () => id });
    closers.push(() => engine.dispose());
    const sha1 = fx.db.select({ sha: releases.sha256 }).from(releases).where(eq(releases.seq, 1)).get()!.sha;
    const devs = await Promise.all(IDS.map((d) => SimDevice.connect(broker.url, d, fx.trusted, { running: { release: 1, sha256: sha1 } })));
    for (const d of devs) closers.push(() => d.close());
    await waitFor(() => IDS.every((d) => fx.device(d)!.online && fx.device(d)!.runningSeq === 1), 5000, { message: 'devices online on release 1' });

    const r = await engine.create({ model: MODEL, releaseSeq: 2, target: { kind: 'all' }, waves: [0.5, 1], soakSeconds: 0 });
    await waitFor(async () => (await engine.get(r.id))!.rollout.state === 'completed', 15_000, { message: `rollout completed (${JSON.stringify((await engine.get(r.id))?.counts)})` });
    const v = (await engine.get(r.id))!;
    expect(v.counts).toMatchObject({ installed: 2, held_back: 1, failed: 0, quarantined: 0, waiting: 0, desired: 0 });
    const row = (d: string) => v.devices.find((x) => x.deviceId === d)!;
    expect(row('pi-1')).toMatchObject({ state: 'held_back', wave: 0 });
    expect(row('pi-1').reason).toMatch(/^held back: upper bound −21\.4 pts < −1\.0: −33\.3 pts \(95% CI −45\.3 … −21\.4\), candidate 66\.7% vs running #1 100\.0%, agreement 66\.7%, 60 audit samples of device pi-1$/);
    expect(row('pi-2')).toMatchObject({ state: 'installed', wave: 0 });
    expect(row('pi-3')).toMatchObject({ state: 'installed', wave: 1 });
    // The wave advanced past the held device.
    expect(v.transitions.some((t) => t.deviceId === null && t.reason === 'wave 2/2 started')).toBe(true);

    // The promise: pi-1 stays on its release, and was never sent the candidate.
    const [d1, d2, d3] = devs;
    expect(d1!.installed).toEqual([]);
    expect(d2!.installed).toEqual([2]);
    expect(d3!.installed).toEqual([2]);
    expect(fx.device('pi-1')).toMatchObject({ runningSeq: 1, desiredSeq: null });
    // The device's page has the reason.
    const notes = fx.db.select().from(deviceEvents).where(eq(deviceEvents.deviceId, 'pi-1')).all();
    expect(notes.find((n) => n.type === 'rollout.held_back')?.reason).toMatch(/^held back: /);

    // The rollout view: figures per device, "no evidence" where there are none.
    const shadow = await rolloutShadowView(fx.registry, v.rollout, v.devices);
    expect(shadow['pi-1']).toMatchObject({ evidence: 'device', hold: true, samples: 60 });
    expect(shadow['pi-2']).toMatchObject({ evidence: 'device', hold: false, delta: 0, deltaHigh: 0 });
    expect(shadow['pi-3']).toMatchObject({ evidence: 'none', hold: false, reason: expect.stringMatching(/^no evidence/) });

    // Reconnecting, pi-1 converges to nothing: the held device is not given the release late either.
    await d1!.close();
    const again = await SimDevice.connect(broker.url, 'pi-1', fx.trusted, { running: { release: 1, sha256: sha1 } });
    closers.push(() => again.close());
    await waitFor(() => fx.device('pi-1')!.online, 5000, { message: 'pi-1 back online' });
    await engine.idle();
    expect(again.installed).toEqual([]);
    expect(fx.device('pi-1')!.desiredSeq).toBeNull();
  });
});
