import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Ingest } from '../../../cloud/fleet/ingest.js';
import { ReleasePublisher } from '../../../cloud/fleet/publisher.js';
import { RolloutError } from '../../../cloud/rollouts/policy.js';
import { RolloutEngine, type RolloutEngineDeps } from '../../../cloud/rollouts/engine.js';
import { verifyManifest } from '../../../shared/manifest/index.js';
import { topics } from '../../../shared/protocol/index.js';
import { FakeMqtt, FleetFixture, MODEL, eventPayload, statusPayload, telemetryPayload } from './fixtures.js';

const ids = (n: number) => Array.from({ length: n }, (_, i) => `d${String(i + 1).padStart(2, '0')}`);

describe('RolloutEngine', () => {
  let fx: FleetFixture;
  let fake: FakeMqtt;
  let ingest: Ingest;
  let engine: RolloutEngine;
  let shas: Record<number, string>;

  async function boot(extra: Partial<RolloutEngineDeps> = {}): Promise<void> {
    ingest = await Ingest.create({ registry: fx.registry });
    const publisher = new ReleasePublisher({ mqtt: fake, dataDir: fx.dir });
    engine = await RolloutEngine.create({ registry: fx.registry, publisher, reissue: fx.reissue, signals: ingest, tickSeconds: 5, ...extra });
  }

  /** One device message, committed at once (status and telemetry writes are batched otherwise). */
  async function feed(...args: Parameters<Ingest['handleMessage']>): Promise<void> {
    void ingest.handleMessage(...args);
    await ingest.flush();
  }

  async function shutdown(): Promise<void> {
    await engine.dispose();
    await ingest.dispose();
  }

  /** What a device daemon reports after installing `seq`: status, event, then a healthy heartbeat. */
  async function install(id: string, seq: number): Promise<void> {
    await feed('status', id, statusPayload(id, seq, shas[seq]));
    await feed('events', id, eventPayload(id, 'installed', seq));
    await feed('telemetry', id, telemetryPayload(id, seq, 'ok'));
    await engine.idle();
  }

  async function advance(seconds: number): Promise<void> {
    await vi.advanceTimersByTimeAsync(seconds * 1000);
    await engine.idle();
  }

  beforeEach(async () => {
    vi.useFakeTimers({ now: new Date('2030-01-01T00:00:00Z') });
    fx = new FleetFixture();
    fake = new FakeMqtt();
    shas = { 1: fx.addRelease(1).sha256, 2: fx.addRelease(2, { parent: 1 }).sha256 };
    for (const id of ids(10)) fx.addDevice(id, { runningSeq: 1, desiredSeq: 1 });
    fx.addDevice('outsider', { groups: ['other'], runningSeq: 1 });
  });
  afterEach(async () => {
    await shutdown();
    fx.dispose();
    vi.useRealTimers();
  });

  it('canary → soak → fleet → completed, and late devices converge', async () => {
    await boot();
    const r = await engine.create({ model: MODEL, releaseSeq: 2, target: { kind: 'group', group: 'lab' }, canaryShare: 0.2, soakSeconds: 60, failureThreshold: 0 });
    expect(r.state).toBe('canary');
    const view = (await engine.get(r.id))!;
    expect(view.counts).toMatchObject({ desired: 2, waiting: 8 });
    const canaries = view.devices.filter((d) => d.canary).map((d) => d.deviceId);
    const rest = ids(10).filter((id) => !canaries.includes(id));
    for (const id of canaries) expect(fake.desiredRelease(id)).toBe(2);
    for (const id of rest) expect(fake.desiredHistory(id)).not.toContain(2);
    expect(fake.retainedChunks(shas[2]!)).toBe(4);
    const desired = fake.retained.get(topics.desired(canaries[0]!))!;
    expect(verifyManifest(desired, fx.trusted)).toMatchObject({ ok: true, manifest: { release: 2 } });

    await install(canaries[0]!, 2);
    await advance(120); // one canary alone never advances
    expect((await engine.get(r.id))!.rollout.state).toBe('canary');
    await install(canaries[1]!, 2);
    expect((await engine.get(r.id))!.rollout.canaryHealthySince).toBe(new Date().toISOString());
    await advance(55);
    expect((await engine.get(r.id))!.rollout.state).toBe('canary');
    await advance(10);
    expect((await engine.get(r.id))!.rollout.state).toBe('fleet');
    for (const id of ids(10)) expect(fake.desiredRelease(id)).toBe(2);
    expect(fake.desiredRelease('outsider')).toBeUndefined();

    for (const id of rest.slice(0, 7)) await install(id, 2);
    expect((await engine.get(r.id))!.rollout.state).toBe('fleet'); // one device still out
    // Installed per status alone (its event was lost): still counts.
    await feed('status', rest[7]!, statusPayload(rest[7]!, 2, shas[2]));
    await engine.idle();
    expect((await engine.get(r.id))!.rollout.state).toBe('completed');
    expect((await engine.get(r.id))!.counts.installed).toBe(10);

    // A device provisioned later gets the current release; one outside the target does not.
    fx.addDevice('late', { groups: ['lab'], online: false });
    await engine.onDeviceProvisioned('late', ['lab']);
    expect(fake.desiredRelease('late')).toBe(2);
    expect(fx.device('late')!.desiredSeq).toBe(2);
    await feed('status', 'outsider', statusPayload('outsider', 1, shas[1]));
    await engine.idle();
    expect(fake.desiredHistory('outsider')).toEqual([]);
    // A device with an older desired state catches up when it comes online.
    fx.addDevice('stale', { groups: ['lab'], online: false, desiredSeq: 1, runningSeq: 1 });
    await feed('status', 'stale', statusPayload('stale', 1, shas[1]));
    await engine.idle();
    expect(fake.desiredRelease('stale')).toBe(2);
  });

  it('canary failures past the threshold abort and re-issue the previous release, higher, to the canaries only', async () => {
    await boot();
    const r = await engine.create({ model: MODEL, releaseSeq: 2, target: { kind: 'group', group: 'lab' }, canaryShare: 0.3, soakSeconds: 60, failureThreshold: 0.3, minFailures: 1 });
    const canaries = (await engine.get(r.id))!.devices.filter((d) => d.canary).map((d) => d.deviceId);
    expect(canaries).toHaveLength(3);
    const others = [...ids(10), 'outsider'].filter((id) => !canaries.includes(id));

    await install(canaries[0]!, 2);
    expect((await engine.get(r.id))!.rollout.state).toBe('canary');
    await feed('events', canaries[1]!, eventPayload(canaries[1]!, 'rejected', 2, 'self_test_failed'));
    await engine.idle();

    const after = (await engine.get(r.id))!;
    expect(after.rollout).toMatchObject({ state: 'rolled_back', rollbackSeq: 3 });
    expect(after.rollout.reason).toMatch(/^1 failed of 2 settled in waves 1..1/);
    expect(fx.reissued).toEqual([{ from: 1, seq: 3 }]);
    for (const id of canaries) {
      expect(fake.desiredRelease(id)).toBe(3);
      expect(fx.device(id)!.desiredSeq).toBe(3);
      const v = verifyManifest(fake.retained.get(topics.desired(id))!, fx.trusted);
      expect(v).toMatchObject({ ok: true, manifest: { release: 3, lineage: { reissueOf: 1 }, artifact: { sha256: shas[1] } } });
    }
    for (const id of others) expect(fake.desiredHistory(id)).not.toContain(2);
    expect(fake.retainedChunks(shas[1]!)).toBe(4); // the re-issue's bytes are on the broker

    await advance(300); // nothing more happens, and never the fleet stage
    expect((await engine.get(r.id))!.rollout.state).toBe('rolled_back');
    for (const id of others) expect(fake.desiredHistory(id)).not.toContain(2);

    // Once nobody runs release 2 any more, its chunks are cleared.
    expect(await engine.gc()).toEqual([]); // canary 0 still runs 2
    await install(canaries[0]!, 3);
    await feed('status', canaries[0]!, statusPayload(canaries[0]!, 3, shas[1]));
    expect(await engine.gc()).toEqual([shas[2]]);
    expect(fake.retainedChunks(shas[2]!)).toBe(0);
    expect(fake.retainedChunks(shas[1]!)).toBe(4);
  });

  it('a canary rolling back during the soak aborts; degraded telemetry restarts the soak', async () => {
    await boot();
    const r = await engine.create({ model: MODEL, releaseSeq: 2, target: { kind: 'devices', ids: ids(4) }, canaryShare: 0.5, soakSeconds: 60, failureThreshold: 0.5 });
    const [a, b] = (await engine.get(r.id))!.devices.filter((d) => d.canary).map((d) => d.deviceId) as [string, string];
    await install(a, 2);
    await install(b, 2);
    await advance(50);
    await feed('telemetry', a, telemetryPayload(a, 2, 'degraded'));
    await engine.idle();
    expect((await engine.get(r.id))!.rollout.canaryHealthySince).toBeNull();
    await feed('telemetry', a, telemetryPayload(a, 2, 'ok'));
    await engine.idle();
    await advance(30); // 80 s after install, but only 30 s healthy
    expect((await engine.get(r.id))!.rollout.state).toBe('canary');

    await feed('events', a, eventPayload(a, 'rolled_back', 2, 'nan_output'));
    await engine.idle();
    expect((await engine.get(r.id))!.rollout.state).toBe('canary'); // 1 failure is below minFailures 2: quarantined
    expect((await engine.get(r.id))!.devices.find((d) => d.deviceId === a)).toMatchObject({ state: 'quarantined', reason: expect.stringMatching(/^nan_output; kept on release 1 \(re-issued as 3\)/) });
    await feed('events', b, eventPayload(b, 'rolled_back', 2, 'latency_budget'));
    await engine.idle();
    expect((await engine.get(r.id))!.rollout).toMatchObject({ state: 'rolled_back', rollbackSeq: 3 }); // the quarantine's re-issue serves the rollback
    expect((await engine.get(r.id))!.devices.find((d) => d.deviceId === b)).toMatchObject({ state: 'failed', reason: 'latency_budget' });
  });

  it('resumes a rollout after a cloud restart and completes it', async () => {
    await boot();
    const r = await engine.create({ model: MODEL, releaseSeq: 2, target: { kind: 'all' }, canaryShare: 0.25, soakSeconds: 60, failureThreshold: 0 });
    const canaries = (await engine.get(r.id))!.devices.filter((d) => d.canary).map((d) => d.deviceId);
    expect(canaries).toHaveLength(3); // ceil(0.25 × 11)
    for (const id of canaries) await install(id, 2);
    await advance(20);

    await shutdown();
    fx.reopen(); // a new process on the same DB file
    fake = new FakeMqtt(); // ...whose embedded broker lost every retained message
    await advance(30); // the cloud was down for a while
    await boot();
    expect((await engine.get(r.id))!.rollout.state).toBe('canary');
    // Retained state is published again from the registry (STYLE.md 4).
    for (const id of canaries) expect(fake.desiredRelease(id)).toBe(2);
    for (const id of ids(10).filter((x) => !canaries.includes(x))) expect(fake.desiredRelease(id)).toBe(1);
    expect(fake.retainedChunks(shas[2]!)).toBe(4);
    await advance(15);
    expect((await engine.get(r.id))!.rollout.state).toBe('fleet');
    for (const id of [...ids(10), 'outsider']) {
      expect(fake.desiredRelease(id)).toBe(2);
      if (!canaries.includes(id)) await install(id, 2);
    }
    expect((await engine.get(r.id))!.rollout.state).toBe('completed');
  });

  it('retries a failed re-issue on the next tick, also across a restart', async () => {
    let fail = true;
    const reissue = async (prev: number) => {
      if (fail) throw new Error('signing key unavailable');
      return fx.reissue(prev);
    };
    await boot({ reissue });
    const r = await engine.create({ model: MODEL, releaseSeq: 2, target: { kind: 'all' }, canaryShare: 0.1, soakSeconds: 0, failureThreshold: 0, minFailures: 1 });
    const canary = (await engine.get(r.id))!.devices.find((d) => d.canary)!.deviceId;
    await feed('events', canary, eventPayload(canary, 'rejected', 2, 'load_failed'));
    await engine.idle();
    expect((await engine.get(r.id))!.rollout.state).toBe('rolling_back');
    await advance(10);
    expect((await engine.get(r.id))!.rollout.state).toBe('rolling_back');

    await shutdown();
    fx.reopen();
    fail = false;
    await boot({ reissue });
    expect((await engine.get(r.id))!.rollout).toMatchObject({ state: 'rolled_back', rollbackSeq: 3 });
    expect(fake.desiredRelease(canary)).toBe(3);
  });

  it('supersedes (same target: every device taken over), aborts and rolls back on request', async () => {
    await boot();
    fx.addRelease(3, { parent: 2 });
    const r1 = await engine.create({ model: MODEL, releaseSeq: 2, canaryShare: 0.1 });
    const r2 = await engine.create({ model: MODEL, releaseSeq: 3, canaryShare: 0.1, soakSeconds: 0 });
    expect((await engine.get(r1.id))!.rollout).toMatchObject({ state: 'superseded', reason: `superseded by rollout ${r2.id}` });
    expect((await engine.get(r1.id))!.counts.superseded).toBe(11);
    expect((await engine.list({ model: MODEL })).map((r) => r.id)).toEqual([r2.id, r1.id]);
    await expect(engine.rollback(r1.id)).rejects.toMatchObject({ code: 'conflict' });
    await expect(engine.create({ model: MODEL, releaseSeq: 99 })).rejects.toBeInstanceOf(RolloutError);
    await expect(engine.create({ model: MODEL, releaseSeq: 2, canaryShare: 2 })).rejects.toMatchObject({ code: 'invalid' });
    await expect(engine.create({ model: MODEL, releaseSeq: 2, target: { kind: 'group', group: 'nobody' } })).rejects.toMatchObject({ code: 'invalid' });

    const canary = (await engine.get(r2.id))!.devices.find((d) => d.canary)!.deviceId;
    const aborted = await engine.abort(r2.id, 'operator said so');
    expect(aborted).toMatchObject({ state: 'aborted', reason: 'operator said so' });
    await expect(engine.abort(r2.id)).rejects.toMatchObject({ code: 'conflict' });
    const rolled = await engine.rollback(r2.id);
    expect(rolled).toMatchObject({ state: 'rolled_back', rollbackSeq: 4 });
    expect(fake.desiredRelease(canary)).toBe(4);
    expect(fx.reissued).toEqual([{ from: 2, seq: 4 }]);
  });
});
