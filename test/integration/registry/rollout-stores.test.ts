import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { eq, max } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { releaseAgent, reissueAgent } from '../../../cloud/agents/release.js';
import { agentRelease, agentReleaseBySeq, desiredAgents, DuplicateAgentReleaseError, insertAgentRelease, listAgentReleases, markAgentChunks, setDesiredAgent } from '../../../cloud/agents/store.js';
import { listDeviceEvents } from '../../../cloud/fleet/events-store.js';
import { ReleasePublisher } from '../../../cloud/fleet/publisher.js';
import type { Registry } from '../../../cloud/registry/db.js';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import type { ReleaseRow } from '../../../cloud/registry/schema.js';
import { RolloutEngine } from '../../../cloud/rollouts/engine.js';
import { shadowEvalOfRelease } from '../../../cloud/shadow/store.js';
import { currentKeySetVersion, setCurrentKeySetVersion } from '../../../cloud/rollouts/keyset.js';
import { applyDeviceEventSteps, countsByState, run } from '../../../cloud/rollouts/store.js';
import { signManifest } from '../../../shared/manifest/index.js';
import { DEVICE_CAPABILITIES, deviceCompat, parseTopic, topics, type DeviceEvent, type Manifest } from '../../../shared/protocol/index.js';
import { tinyBundle } from '../../fixtures/agent-tar.js';
import { registryDialects } from '../../helpers/dialects.js';
import { FakeMqtt, FleetFixture, MODEL, artifactBytes } from '../../unit/fleet/fixtures.js';

/**
 * The rollout engine and the agent store on both registry dialects (issue 15): the same rollout over the
 * same devices gives the same rows, transitions and notes on SQLite and PostgreSQL.
 */
const dialects = registryDialects();

/**
 * The real publisher over a recording MQTT client, without its own registry bookkeeping (chunks published,
 * GC, republish): that is the fleet area's store, converted separately. The desired publishes are real.
 */
class DesiredOnlyPublisher extends ReleasePublisher {
  override async ensureChunks(_registry: Registry, _row: ReleaseRow): Promise<void> {}
  override async gcArtifacts(): Promise<string[]> {
    return [];
  }
}

describe.each(dialects)('rollout stores on $name', (d) => {
  let reg: StoreRegistry;
  let fx: FleetFixture;
  let mqtt: FakeMqtt;
  let engine: RolloutEngine | undefined;

  async function addRelease(seq: number, parent: number | null, bytesOf = seq): Promise<void> {
    const bytes = artifactBytes(bytesOf);
    const m = fx.manifest(seq, bytes, { parent });
    const signed = signManifest(m, fx.key);
    await reg.q.insert(reg.t.releases).values({ model: MODEL, seq, sha256: m.artifact.sha256, bytes: bytes.byteLength, quantization: 'fp32', metrics: m.metrics, manifest: signed.manifest, signature: signed.signature, parentSeq: parent, artifactPath: `artifacts/${m.artifact.sha256}.onnx` });
  }

  /** What cloud/rounds does on rollback: the previous release's bytes under max(seq)+1. */
  const reissue = async (prev: number): Promise<number> => {
    const [top] = await reg.q.select({ m: max(reg.t.releases.seq) }).from(reg.t.releases);
    const [old] = await reg.q.select().from(reg.t.releases).where(eq(reg.t.releases.seq, prev));
    const seq = (top?.m ?? 0) + 1;
    const signed = signManifest({ ...(old!.manifest as Manifest), release: seq, parent: prev }, fx.key);
    const { id: _id, ...copy } = old!;
    await reg.q.insert(reg.t.releases).values({ ...copy, seq, manifest: signed.manifest, signature: signed.signature, parentSeq: prev, chunksPublished: false });
    return seq;
  };

  const event = (deviceId: string, type: DeviceEvent['type'], release: number | null, reason?: DeviceEvent['reason']): DeviceEvent => ({ v: 1, deviceId, at: new Date().toISOString(), type, model: release === null ? null : MODEL, release, sha256: null, ...(reason ? { reason } : {}) });

  /** A device event as ingest applies it: its rollout effect in one transaction. */
  const apply = (ev: DeviceEvent) => reg.tx((tx, t) => applyDeviceEventSteps(tx, t, ev, new Date()));

  beforeEach(async (ctx) => {
    reg = await d.open(ctx);
    fx = new FleetFixture();
    mqtt = new FakeMqtt();
    await reg.q.insert(reg.t.models).values({ name: MODEL, inputSpec: { shape: [4], dtype: 'float32', scaling: { scale: 1, offset: 0 }, raw: 'float32' }, labels: ['a', 'b'], teacher: { files: [], outputKind: 'logits' }, studentSpec: 'mlp', distillSettings: {} });
    await addRelease(1, null);
    await addRelease(2, 1);
    const at = new Date().toISOString();
    await reg.q.insert(reg.t.devices).values(['d1', 'd2', 'd3', 'd4'].map((id) => ({ id, groups: ['lab'], credentialHash: 'x', online: true, runningSeq: 1, desiredSeq: 1, lastSeen: at })));
  });
  afterEach(async () => {
    await engine?.dispose();
    engine = undefined;
    fx.dispose();
    await d.close();
  });

  /**
   * The engine's agreement gate reads cloud/shadow/store.ts, converted to both dialects on another branch
   * of issue 15 (h15c): until it is merged, the engine cases skip on PostgreSQL, saying so.
   */
  async function engineOrSkip(ctx: { skip: (note?: string) => void }): Promise<RolloutEngine> {
    try {
      await shadowEvalOfRelease(reg as Registry, 1);
    } catch (err) {
      ctx.skip(`the agreement gate's shadow store is SQLite-only on this branch (${(err as Error).message})`);
    }
    return boot();
  }

  async function boot(): Promise<RolloutEngine> {
    // What a device declared, read from this registry (cloud/fleet/device-compat.ts is the fleet area's).
    const compatOf = async (id: string) => deviceCompat((await reg.q.select({ protocolVersion: reg.t.devices.protocolVersion, capabilities: reg.t.devices.capabilities }).from(reg.t.devices).where(eq(reg.t.devices.id, id)))[0]);
    const reissueAgentSeq = async (agentSeq: number) => (await reissueAgent({ registry: reg, key: fx.key, agentSeq, now: new Date() })).agentSeq;
    engine = await RolloutEngine.create({ registry: reg, publisher: new DesiredOnlyPublisher({ mqtt, dataDir: fx.dir, compatOf }), reissue, reissueAgent: reissueAgentSeq, tickSeconds: 3600, republishOnStart: false, requireTelemetry: false });
    return engine;
  }

  /** The agentSeq retained on the device's agent topic, or undefined. */
  const retainedAgent = (id: string): number | undefined => {
    const got = mqtt.retained.get(topics.agent(id));
    return got ? (JSON.parse(got.toString()) as { manifest: { agentSeq: number } }).manifest.agentSeq : undefined;
  };

  it('a rollout in two waves: canary, fleet, a failure quarantined on a re-issue, completed; rows, log and notes agree', async (ctx) => {
    const e = await engineOrSkip(ctx);
    const r = await e.create({ model: MODEL, releaseSeq: 2, target: { kind: 'all' }, waves: [0.25, 1], soakSeconds: 0 });
    expect(r.state).toBe('canary');
    const canary = (await e.get(r.id))!.devices.filter((x) => x.wave === 0).map((x) => x.deviceId);
    expect(canary).toHaveLength(1);
    expect(mqtt.desiredRelease(canary[0]!)).toBe(2);
    expect((await reg.q.select().from(reg.t.devices).where(eq(reg.t.devices.id, canary[0]!)))[0]!.desiredSeq).toBe(2);

    expect(await apply(event(canary[0]!, 'installed', 2))).toMatchObject({ rolloutId: r.id, from: 'desired', to: 'installed', effect: 'installed' });
    await e.evaluate();
    let v = (await e.get(r.id))!;
    expect(v.rollout.state).toBe('fleet');
    const fleet = v.devices.filter((x) => x.wave === 1).map((x) => x.deviceId);
    expect(v.counts).toMatchObject({ installed: 1, desired: 3, waiting: 0 });
    for (const id of fleet) expect(mqtt.desiredRelease(id)).toBe(2);

    // One failure (below minFailures 2): quarantined on its running release 1, re-issued above 2.
    expect(await apply(event(fleet[0]!, 'rolled_back', 2, 'self_test_failed'))).toMatchObject({ to: 'failed', effect: 'failure' });
    await e.evaluate();
    expect(mqtt.desiredRelease(fleet[0]!)).toBe(3);
    for (const id of fleet.slice(1)) await apply(event(id, 'installed', 2));
    await e.evaluate();
    v = (await e.get(r.id))!;
    expect(v.rollout.state).toBe('completed');
    expect(v.counts).toMatchObject({ installed: 3, quarantined: 1, desired: 0, failed: 0 });
    expect(v.rollout.quarantineSeqs).toEqual({ '1': 3 });
    expect(await run(reg, (tx, t) => countsByState(tx, t, r.id))).toEqual(v.counts);
    expect(v.transitions.filter((x) => x.deviceId === null).map((x) => `${x.fromState}→${x.toState}`).reverse()).toEqual(['null→pending', 'pending→canary', 'canary→fleet', 'fleet→completed']);
    const notes = await listDeviceEvents(reg, { deviceId: fleet[0]!, limit: 5 });
    expect(notes.map((n) => [n.type, n.source, n.release])).toEqual([['rollout.quarantined', 'rollout', 2]]);
    expect((await e.list({ model: MODEL })).map((x) => x.id)).toEqual([r.id]);
  });

  it('pause moves deadlines on resume; a newer rollout supersedes the overlap; rollback re-issues 1 to every device given 2', async (ctx) => {
    const e = await engineOrSkip(ctx);
    const a = await e.create({ model: MODEL, releaseSeq: 2, target: { kind: 'all' }, waves: [1], soakSeconds: 0, deviceTimeoutSeconds: 600 });
    expect(a.state).toBe('fleet');
    const before = (await e.get(a.id))!.devices.map((x) => x.deadlineAt!);
    await e.pause(a.id, 'lunch');
    await new Promise((r) => setTimeout(r, 30));
    const resumed = await e.resume(a.id);
    expect(resumed.pausedAt).toBeNull();
    const after = (await e.get(a.id))!.devices.map((x) => x.deadlineAt!);
    after.forEach((x, i) => expect(Date.parse(x)).toBeGreaterThan(Date.parse(before[i]!)));

    await addRelease(3, 2, 33);
    const b = await e.create({ model: MODEL, releaseSeq: 3, target: { kind: 'devices', ids: ['d1', 'd2'] }, waves: [1], soakSeconds: 0 });
    const va = (await e.get(a.id))!;
    expect(va.devices.filter((x) => x.state === 'superseded').map((x) => [x.deviceId, x.supersededBy])).toEqual([['d1', b.id], ['d2', b.id]]);
    expect(va.rollout.state).toBe('fleet'); // d3, d4 are still its own

    const rolled = await e.rollback(b.id, 'bad release');
    expect(rolled.state).toBe('rolled_back');
    expect(rolled.rollbackSeq).toBe(4);
    expect(mqtt.desiredRelease('d1')).toBe(4);
    expect(mqtt.desiredRelease('d2')).toBe(4);
    expect((await listDeviceEvents(reg, { deviceId: 'd1', limit: 5 })).map((n) => [n.type, n.release])).toEqual([['rollout.rolled_back', 4], ['rollout.superseded', 2]]);
    await expect(e.rollback(a.id)).rejects.toThrow(/not the latest/);
  });

  it('an unknown_key rejection: retried for a device catching up, a security pause for one on the current key set', async (ctx) => {
    expect(await currentKeySetVersion(reg)).toBeNull();
    await setCurrentKeySetVersion(reg, 4);
    await setCurrentKeySetVersion(reg, 5);
    expect(await currentKeySetVersion(reg)).toBe(5);
    await expect(setCurrentKeySetVersion(reg, -1)).rejects.toThrow(/non-negative integer/);
    const e = await engineOrSkip(ctx);
    const r = await e.create({ model: MODEL, releaseSeq: 2, target: { kind: 'all' }, waves: [1], soakSeconds: 0 });
    await reg.q.update(reg.t.devices).set({ trust: { keysetVersion: 4, state: 'ok' } }).where(eq(reg.t.devices.id, 'd1'));
    await reg.q.update(reg.t.devices).set({ trust: { keysetVersion: 5, state: 'ok' } }).where(eq(reg.t.devices.id, 'd2'));
    expect(await apply(event('d1', 'rejected', null, 'unknown_key'))).toMatchObject({ effect: 'retry', to: 'desired' });
    expect((await e.get(r.id))!.rollout.pausedAt).toBeNull();
    expect(await apply(event('d2', 'rejected', null, 'unknown_key'))).toMatchObject({ effect: 'security' });
    const v = (await e.get(r.id))!;
    expect(v.rollout.pausedAt).not.toBeNull();
    expect(v.rollout.securityAlert).toMatch(/device d2 refused release 2/);
  });

  it('an agent rollout: only capable devices of the platform, installs seen in the status, chunks marked; rollback re-issues 0.1.0 higher', async () => {
    for (const v of ['0.1.0', '0.2.0']) {
      const tar = join(fx.dir, `push-${v}.tar.gz`);
      writeFileSync(tar, await tinyBundle(fx.dir, v));
      await releaseAgent({ registry: reg, dataDir: fx.dir, key: fx.key, tarPath: tar, now: new Date() });
    }
    const caps = [DEVICE_CAPABILITIES.agentUpdate];
    await reg.q.update(reg.t.devices).set({ platform: 'linux-x64', capabilities: caps, agent: 'apprentice-edge/0.1.0' }).where(eq(reg.t.devices.id, 'd1'));
    await reg.q.update(reg.t.devices).set({ platform: 'linux-x64', capabilities: caps, agent: 'apprentice-edge/0.1.0' }).where(eq(reg.t.devices.id, 'd2'));
    await reg.q.update(reg.t.devices).set({ platform: 'linux-arm64', capabilities: caps }).where(eq(reg.t.devices.id, 'd3'));
    const e = await boot();
    const r = await e.create({ model: 'agent:linux-x64', kind: 'agent', releaseSeq: 2, target: { kind: 'all' }, waves: [1], soakSeconds: 0 });
    let v = (await e.get(r.id))!;
    expect(v.devices.map((x) => [x.deviceId, x.state])).toEqual([['d1', 'desired'], ['d2', 'desired'], ['d3', 'incompatible'], ['d4', 'incompatible']]);
    expect(v.devices[2]!.reason).toMatch(/platform linux-arm64/);
    expect([retainedAgent('d1'), retainedAgent('d2'), retainedAgent('d3')]).toEqual([2, 2, undefined]);
    expect((await agentReleaseBySeq(reg, 2))!.chunksPublished).toBe(true);
    expect([...mqtt.retained.keys()].some((k) => parseTopic(k)?.type === 'artifact')).toBe(true);
    expect((await desiredAgents(reg)).map((x) => [x.deviceId, x.release.agentSeq])).toEqual([['d1', 2], ['d2', 2]]);

    // The status naming the new version is the evidence (deliverable.ts `running`, as a condition and as a selected value).
    const seen = () => new Date(Date.now() + 1000).toISOString(); // a status after the rollout started
    await reg.q.update(reg.t.devices).set({ agent: 'apprentice-edge/0.2.0', lastSeen: seen() }).where(eq(reg.t.devices.id, 'd1'));
    await reg.q.update(reg.t.devices).set({ lastSeen: seen() }).where(eq(reg.t.devices.id, 'd2'));
    await e.evaluate();
    v = (await e.get(r.id))!;
    expect(v.counts).toMatchObject({ installed: 1, desired: 1 });
    expect(v.coverage).toEqual({ connected: 2, running: 1, share: 0.5 });
    await reg.q.update(reg.t.devices).set({ agent: '0.2.0' }).where(eq(reg.t.devices.id, 'd2'));
    await e.evaluate();
    expect((await e.get(r.id))!.rollout.state).toBe('completed');

    const rolled = await e.rollback(r.id, 'bad agent');
    expect(rolled).toMatchObject({ state: 'rolled_back', rollbackSeq: 3 });
    expect((await agentReleaseBySeq(reg, 3))).toMatchObject({ version: '0.1.0', reissueOf: 1 });
    expect([retainedAgent('d1'), retainedAgent('d2')]).toEqual([3, 3]);
  });

  it('agent store: sequences allocated in the transaction, a duplicate upload refused, desired agents and chunk marks', async () => {
    const row = (seq: number, version: string, reissueOf: number | null = null) => ({ version, platform: 'linux-x64', sha256: `sha-${version}`, bytes: 10, manifest: { agentSeq: seq }, signature: { keyId: 'k', sig: 's' }, reissueOf, artifactPath: `agents/${version}.tar.gz` });
    const [a, b] = await Promise.all([insertAgentRelease(reg, (s) => row(s, '0.1.0')), insertAgentRelease(reg, (s) => row(s, '0.2.0'))]);
    expect([a.agentSeq, b.agentSeq].sort()).toEqual([1, 2]);
    await expect(insertAgentRelease(reg, (s) => row(s, '0.1.0'))).rejects.toBeInstanceOf(DuplicateAgentReleaseError);
    const re = await insertAgentRelease(reg, (s) => row(s, '0.1.0', a.agentSeq));
    expect(re).toMatchObject({ agentSeq: 3, reissueOf: a.agentSeq, chunksPublished: false });
    expect((await agentRelease(reg, '0.1.0', 'linux-x64'))!.agentSeq).toBe(3);
    expect((await listAgentReleases(reg, { platform: 'linux-x64' })).map((x) => x.agentSeq)).toEqual([3, 2, 1]);
    await markAgentChunks(reg, 'sha-0.1.0', true);
    // Which of the two concurrent uploads got 1 is up to the database: the marks follow the sha256.
    expect((await agentReleaseBySeq(reg, a.agentSeq))!.chunksPublished).toBe(true);
    expect((await agentReleaseBySeq(reg, re.agentSeq))!.chunksPublished).toBe(true);
    expect((await agentReleaseBySeq(reg, b.agentSeq))!.chunksPublished).toBe(false);
    await setDesiredAgent(reg, 'd1', b.agentSeq);
    await setDesiredAgent(reg, 'd2', 3);
    await setDesiredAgent(reg, 'd2', null);
    expect((await desiredAgents(reg)).map((x) => [x.deviceId, x.release.version])).toEqual([['d1', '0.2.0']]);
  });
});
