/**
 * On-device shadow runs, cloud side (issue 13 items 4 and 7): the real registry (SQLite, committed
 * migrations), real signing (cloud/rounds signShadowManifest and reissueRelease), the real ReleasePublisher
 * with the compatibility policy (compat.ts desiredFor) on a recording broker, the real Ingest feeding
 * telemetry, and the real RolloutEngine started by the switch.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createCloudApi } from '../../../cloud/api/app.js';
import { KeyStore } from '../../../cloud/keys/store.js';
import { deviceCompatOf } from '../../../cloud/fleet/device-compat.js';
import { ReleasePublisher } from '../../../cloud/fleet/publisher.js';
import { devices, releases, rolloutDevices } from '../../../cloud/registry/schema.js';
import { reissueRelease, signShadowManifest, RELEASE_SEQ_HIGH } from '../../../cloud/rounds/index.js';
import { agreementGate, allGates, ShadowRollouts, type ShadowSwitchGate } from '../../../cloud/shadow/index.js';
import { signManifest, verifyManifest } from '../../../shared/manifest/index.js';
import { DEVICE_CAPABILITIES, topics, type Manifest, type ShadowTelemetry, type Telemetry } from '../../../shared/protocol/index.js';
import { RolloutHarness } from '../../unit/rollouts/harness.js';
import { MODEL, eventPayload } from '../../unit/fleet/fixtures.js';
import { call, json } from '../../unit/cloud-api/helpers.js';

const T0 = Date.parse('2030-01-01T00:00:00Z');
let now: number;
let h: RolloutHarness;
let shadow: ShadowRollouts;
const policy = { waves: [1], soakSeconds: 60, failureThreshold: 0.5 };

beforeEach(async () => {
  now = T0;
  h = new RolloutHarness();
  h.addRelease(1);
  h.addRelease(2, 1);
  await h.boot({ now: () => new Date(now), republishOnStart: false });
  const seen = new Date(T0 - 1000).toISOString();
  h.fx.addDevice('d01', { desiredSeq: 1, runningSeq: 1 });
  h.fx.addDevice('d02', { desiredSeq: 1, runningSeq: 1 });
  h.fx.addDevice('d03', { online: false });
  // d01 declares manifest.shadow; d02 is a protocol-2 daemon without it; d03 never reported a status.
  h.fx.db.update(devices).set({ protocolVersion: 2, capabilities: [DEVICE_CAPABILITIES.shadow], lastSeen: seen }).where(eq(devices.id, 'd01')).run();
  h.fx.db.update(devices).set({ protocolVersion: 2, capabilities: [], lastSeen: seen }).where(eq(devices.id, 'd02')).run();
  shadow = newService();
});
afterEach(async () => {
  await shadow.stop();
  await h.dispose();
});

const signer = () => ({ sign: (m: Manifest) => signManifest(m, h.fx.key) });
function newService(gate?: ShadowSwitchGate): ShadowRollouts {
  const publisher = new ReleasePublisher({ mqtt: h.fake, dataDir: h.fx.dir, compatOf: (id) => deviceCompatOf(h.fx.registry, id) });
  const s = new ShadowRollouts({
    registry: h.fx.registry,
    publisher,
    signals: h.ingest,
    now: () => new Date(now),
    signShadow: (seq, until) => signShadowManifest(h.fx.registry, signer(), seq, until, new Date(now)),
    reissue: async (seq) => reissueRelease(h.fx.registry, signer(), seq, { now: new Date(now) }),
    rollouts: h.engine,
    newId: () => `shadow-${Math.random().toString(16).slice(2, 10)}`,
    ...(gate ? { gate } : {}),
  });
  s.start();
  return s;
}

/** What `d` has retained on `desired`, verified as a device would. */
function retainedDesired(d: string): Manifest {
  const raw = h.fake.retained.get(topics.desired(d));
  if (!raw) throw new Error(`no retained desired for ${d}`);
  const v = verifyManifest(JSON.parse(raw.toString()), h.fx.trusted);
  if (!v.ok) throw new Error(`retained desired does not verify: ${v.reason}`);
  return v.manifest;
}

/** A heartbeat with shadow figures, through the real ingest (its strict telemetry schema). */
async function report(d: string, s: Omit<ShadowTelemetry, 'model' | 'until' | 'latencyMs' | 'skipped' | 'state'> & Partial<ShadowTelemetry>, until: string): Promise<void> {
  const t: Telemetry = {
    v: 1, deviceId: d, at: new Date(now).toISOString(), model: MODEL, release: 1, uptimeSeconds: 10, requests: 5, errors: 0,
    latencyMs: { p50: 1, p95: 2 }, rssBytes: 1e8, outbox: { depth: 0, bytes: 0, dropped: 0, evicted: 0, selected: 0, published: 0 }, health: 'ok',
    shadow: { model: MODEL, until, state: 'running', skipped: 0, latencyMs: { p50: 0.4, p95: 0.9 }, ...s },
  };
  await h.feed('telemetry', d, Buffer.from(JSON.stringify(t)));
  await new Promise((r) => setTimeout(r, 10));
}

const start = (over: Partial<Parameters<ShadowRollouts['create']>[0]> = {}) =>
  shadow.create({ model: MODEL, releaseSeq: 2, target: { kind: 'devices', ids: ['d01', 'd02', 'd03'] }, policy, minutes: 30, minAgreement: 0.9, minRequests: 20, ...over });

describe('shadow runs in the cloud', () => {
  it('sends a signed shadow manifest to capable devices only: older ones are incompatible, unknown ones wait', async () => {
    const run = await start();
    const m = retainedDesired('d01');
    const cand = h.fx.db.select().from(releases).where(eq(releases.seq, 2)).get()!;
    expect(m.shadow).toEqual({ until: new Date(T0 + 30 * 60_000).toISOString() });
    expect(m.release).toBe(run.shadowSeq);
    expect(m.release).toBeGreaterThan(2);
    expect(m.artifact.sha256).toBe(cand.sha256);
    expect(m.lineage.reissueOf).toBe(2);
    // The sequence came from the one global sequence, with no release row of its own.
    expect(h.fx.db.select().from(releases).where(eq(releases.seq, run.shadowSeq)).get()).toBeUndefined();
    expect(Number(h.fx.registry.sqlite.prepare('SELECT value FROM meta WHERE key = ?').pluck().get(RELEASE_SEQ_HIGH))).toBe(run.shadowSeq);
    expect(h.fake.retained.has(topics.desired('d02'))).toBe(false);
    const v = (await shadow.get(run.id))!;
    expect(v.devices.map((d) => [d.deviceId, d.state])).toEqual([['d01', 'sent'], ['d02', 'incompatible'], ['d03', 'pending']]);
    expect(v.devices[1]!.reason).toContain(DEVICE_CAPABILITIES.shadow);
  });

  it('switch path: figures from telemetry pass the gate at the window end; the same bytes are re-issued at a new sequence and rolled out', async () => {
    const run = await start();
    await report('d01', { release: run.shadowSeq, sha256: retainedDesired('d01').artifact.sha256, requests: 40, agreements: 38 }, run.until);
    // A report about another candidate changes nothing.
    await report('d01', { release: run.shadowSeq + 100, sha256: retainedDesired('d01').artifact.sha256, requests: 1, agreements: 0 }, run.until);
    let v = (await shadow.get(run.id))!;
    expect(v.devices[0]).toMatchObject({ state: 'running', requests: 40, agreements: 38, latencyP50Ms: 0.4, latencyP95Ms: 0.9 });
    expect(v.decision).toMatchObject({ switch: true });

    now += 30 * 60_000 - 1;
    await shadow.tick();
    expect((await shadow.get(run.id))!.run.state).toBe('shadowing');
    now += 1;
    await shadow.tick();
    v = (await shadow.get(run.id))!;
    expect(v.run).toMatchObject({ state: 'switched' });
    expect(v.run.reason).toMatch(/gate passed/);
    const seq = v.run.switchedSeq!;
    expect(seq).toBeGreaterThan(run.shadowSeq);
    const switched = h.fx.db.select().from(releases).where(eq(releases.seq, seq)).get()!;
    const cand = h.fx.db.select().from(releases).where(eq(releases.seq, 2)).get()!;
    expect(switched.sha256).toBe(cand.sha256);
    expect((switched.manifest as Manifest).shadow).toBeUndefined();
    const rollout = (await h.view(v.run.rolloutId!));
    expect(rollout.rollout).toMatchObject({ releaseSeq: seq, model: MODEL });
    expect(h.fx.db.select().from(rolloutDevices).where(eq(rolloutDevices.rolloutId, rollout.rollout.id)).all().map((r) => r.deviceId).sort()).toEqual(['d01', 'd02', 'd03']);
    expect(retainedDesired('d01')).toMatchObject({ release: seq });
    expect(await shadow.forRollout(rollout.rollout.id)).toMatchObject({ run: { id: run.id } });
  });

  it('no-switch path: agreement below the threshold at the window end; devices get their own release back as desired', async () => {
    const run = await start();
    await report('d01', { release: run.shadowSeq, sha256: retainedDesired('d01').artifact.sha256, requests: 40, agreements: 30 }, run.until);
    const before = h.fx.db.select().from(releases).all().length;
    now += 31 * 60_000;
    await shadow.tick();
    const v = (await shadow.get(run.id))!;
    expect(v.run).toMatchObject({ state: 'expired', switchedSeq: null, rolloutId: null });
    expect(v.run.reason).toMatch(/agreement below 90% on 1 device\(s\) \(lowest d01: 75%\)/);
    expect(h.fx.db.select().from(releases).all()).toHaveLength(before);
    expect(retainedDesired('d01').release).toBe(1);
    expect(retainedDesired('d01').shadow).toBeUndefined();
    await expect(shadow.switch(run.id)).rejects.toMatchObject({ code: 'conflict' });
  });

  it('no evidence (too few shadowed examples) does not switch; --no-auto-switch waits for the operator', async () => {
    const quiet = await start();
    await report('d01', { release: quiet.shadowSeq, sha256: retainedDesired('d01').artifact.sha256, requests: 5, agreements: 5 }, quiet.until);
    const manual = await start({ autoSwitch: false, target: { kind: 'devices', ids: ['d01'] } });
    now += 31 * 60_000;
    await shadow.tick();
    expect((await shadow.get(quiet.id))!.run).toMatchObject({ state: 'expired', reason: expect.stringMatching(/no evidence/) });
    expect((await shadow.get(manual.id))!.run).toMatchObject({ state: 'expired', reason: 'window ended with no switch' });
  });

  it('the operator switches during the window whatever the figures, once; an abort ends a run with no switch', async () => {
    const a = await start();
    const v = await shadow.switch(a.id, 'looks fine');
    expect(v.run).toMatchObject({ state: 'switched', reason: 'looks fine' });
    await expect(shadow.switch(a.id)).rejects.toMatchObject({ code: 'conflict' });
    await expect(shadow.switch('shadow-nope')).rejects.toMatchObject({ code: 'not_found' });
    const b = await start({ releaseSeq: 1 });
    expect((await shadow.abort(b.id)).run).toMatchObject({ state: 'aborted', reason: 'aborted by operator' });
  });

  it('a device refusing the candidate (self-test failed) is recorded and fails the gate; a refusal not its fault does not', async () => {
    const run = await start();
    await h.feed('events', 'd01', eventPayload('d01', 'rejected', run.shadowSeq, 'self_test_failed'));
    await new Promise((r) => setTimeout(r, 10));
    let v = (await shadow.get(run.id))!;
    expect(v.devices[0]).toMatchObject({ deviceId: 'd01', state: 'refused', reason: 'self_test_failed' });
    expect(v.decision).toMatchObject({ switch: false, reason: expect.stringMatching(/refused by 1 device/) });
    const other = await start({ releaseSeq: 1 });
    await h.feed('events', 'd01', eventPayload('d01', 'rejected', other.shadowSeq, 'download_failed'));
    await new Promise((r) => setTimeout(r, 10));
    v = (await shadow.get(other.id))!;
    expect(v.devices[0]).toMatchObject({ state: 'refused', reason: 'download_failed' });
    expect(v.decision.reason).toMatch(/no evidence/);
  });

  it('after the engine republishes every normal desired (cloud start, broker reconnect), the running windows are put back', async () => {
    const run = await start();
    await h.engine.republish();
    expect(retainedDesired('d01').release).toBe(1);
    expect(await shadow.republish()).toBe(1);
    expect(retainedDesired('d01')).toMatchObject({ release: run.shadowSeq, shadow: { until: run.until } });
    now += 31 * 60_000;
    expect(await shadow.republish()).toBe(0); // a closed window is not sent again
  });

  it('the gate is a seam: a second gate (the teacher-labelled one of item 3) can veto the switch', async () => {
    await shadow.stop();
    const veto: ShadowSwitchGate = async () => ({ switch: false, reason: 'teacher: candidate worse on labelled disagreements', devices: [] });
    shadow = newService(allGates(agreementGate, veto));
    const run = await start();
    await report('d01', { release: run.shadowSeq, sha256: retainedDesired('d01').artifact.sha256, requests: 40, agreements: 40 }, run.until);
    now += 31 * 60_000;
    await shadow.tick();
    expect((await shadow.get(run.id))!.run).toMatchObject({ state: 'expired', reason: expect.stringContaining('teacher: candidate worse') });
  });

  it('API: POST /v1/rollouts with shadow, GET shows per-device figures, POST switch, the rollout shows its run; 422/404/409', async () => {
    const keysDir = join(h.fx.dir, 'keys');
    mkdirSync(keysDir, { recursive: true });
    const app = createCloudApi({
      registry: h.fx.registry,
      keys: KeyStore.open({ dir: keysDir }),
      adminToken: 'test-admin-token-0123456789abcdef',
      broker: { publicUrl: 'mqtts://broker.example.com:8883' },
      rounds: { start: () => ({ id: 'r' }) },
      rollouts: h.engine,
      shadow,
      artifactsDir: h.fx.dir,
    });
    const body = { model: MODEL, release: 2, target: { devices: ['d01', 'd02'] }, soakSeconds: 60, failureThreshold: 0.5, waves: [1], shadow: { minutes: 10, minAgreement: 0.9, minRequests: 20 } };
    const res = await call(app, 'POST', '/v1/rollouts', { body });
    expect(res.status).toBe(201);
    const run = await json(res);
    expect(run).toMatchObject({ kind: 'shadow', model: MODEL, release: 2, state: 'shadowing', autoSwitch: true, minAgreement: 0.9 });
    expect(res.headers.get('location')).toBe(`/v1/rollouts/${run.id}`);
    await report('d01', { release: run.shadowRelease, sha256: retainedDesired('d01').artifact.sha256, requests: 50, agreements: 49 }, run.until);
    const got = await json(await call(app, 'GET', `/v1/rollouts/${run.id}`));
    expect(got.devices).toEqual([
      expect.objectContaining({ deviceId: 'd01', state: 'running', requests: 50, agreements: 49, agreement: 0.98, verdict: 'pass', latencyMs: { p50: 0.4, p95: 0.9 } }),
      expect.objectContaining({ deviceId: 'd02', state: 'incompatible', agreement: null, verdict: null }),
    ]);
    expect(got.gate.switch).toBe(true);
    const bad = await call(app, 'POST', '/v1/rollouts', { body: { ...body, shadow: { minutes: 0 } } });
    expect(bad.status).toBe(400);
    expect((await json(bad)).error.field).toBe('shadow.minutes');
    expect((await call(app, 'GET', '/v1/rollouts/shadow-missing')).status).toBe(404);
    const sw = await json(await call(app, 'POST', `/v1/rollouts/${run.id}/switch`, { body: { reason: 'agreement is fine' } }));
    expect(sw).toMatchObject({ state: 'switched', reason: 'agreement is fine' });
    expect((await call(app, 'POST', `/v1/rollouts/${run.id}/switch`)).status).toBe(409);
    const ro = await json(await call(app, 'GET', `/v1/rollouts/${sw.rolloutId}`));
    expect(ro).toMatchObject({ release: sw.switchedRelease, shadow: { id: run.id, state: 'switched' } });
    const off = createCloudApi({ registry: h.fx.registry, keys: KeyStore.open({ dir: keysDir }), adminToken: 'test-admin-token-0123456789abcdef', broker: { publicUrl: 'mqtts://b:8883' }, rounds: { start: () => ({ id: 'r' }) }, rollouts: h.engine, artifactsDir: h.fx.dir });
    const refused = await call(off, 'POST', '/v1/rollouts', { body: { ...body, release: 1 } });
    expect(refused.status).toBe(422);
    expect((await json(refused)).error.field).toBe('shadow');
  });
});
