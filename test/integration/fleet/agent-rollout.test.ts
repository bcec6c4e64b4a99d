/**
 * Issue 14, cloud side: agent releases go through the rollout engine over a real broker (aedes, and
 * Mosquitto where installed). Fake devices (MQTT clients) read their retained `devices/{id}/agent`,
 * check the signature and the artifact's retained chunks, and answer like the daemon: a status naming
 * the new agent version and an `agent_committed` event, or an `agent_rolled_back` event.
 */
import { randomUUID, verify } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import type { MqttClient } from 'mqtt';
import { Registry as PromRegistry } from 'prom-client';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { agentReleases, deviceEvents, rolloutDevices } from '../../../cloud/registry/schema.js';
import type { RolloutEngine } from '../../../cloud/rollouts/engine.js';
import { canonicalBytes } from '../../../shared/manifest/canonical.js';
import { loadPublicKey } from '../../../shared/manifest/keys.js';
import { agentManifestSchema, DEVICE_CAPABILITIES, topics, type AgentManifest, type DeviceEvent, type Status } from '../../../shared/protocol/index.js';
import { pushTinyAgent, startAgentCloud } from '../../helpers/agent-cloud.js';
import { clearRetained } from '../../helpers/retained.js';
import { brokerMatrix, waitFor, type TestBroker } from '../../helpers/broker.js';
import { FleetFixture } from '../../unit/fleet/fixtures.js';
import { connectClient } from './device-sim.js';

const iso = () => new Date().toISOString();

/** A daemon as the cloud sees it: status with agent version, platform and capabilities; agent events. */
class FakeAgentDevice {
  readonly received: AgentManifest[] = [];
  private constructor(
    readonly id: string,
    readonly client: MqttClient,
    private version: string,
    private readonly platform: string,
    private readonly capabilities: string[],
  ) {}

  static async connect(url: string, id: string, o: { version: string; platform: string; capabilities: string[]; publicKeyPem: string; onRelease: (d: FakeAgentDevice, m: AgentManifest) => Promise<void> }): Promise<FakeAgentDevice> {
    const client = await connectClient(url, `dev-${id}-${randomUUID().slice(0, 6)}`);
    const d = new FakeAgentDevice(id, client, o.version, o.platform, o.capabilities);
    client.on('message', (topic, payload) => {
      if (topic !== topics.agent(id) || payload.length === 0) return;
      const signed = JSON.parse(payload.toString()) as { manifest: unknown; signature: { sig: string } };
      // The device's first check: the release key's signature over the canonical JSON.
      if (!verify(null, canonicalBytes(signed.manifest), loadPublicKey(o.publicKeyPem), Buffer.from(signed.signature.sig, 'base64'))) throw new Error('bad signature');
      const m = agentManifestSchema.parse(signed.manifest);
      d.received.push(m);
      void o.onRelease(d, m);
    });
    await client.subscribeAsync(topics.agent(id), { qos: 1 });
    await d.sendStatus();
    return d;
  }

  async sendStatus(version = this.version): Promise<void> {
    this.version = version;
    const s: Status = { v: 1, deviceId: this.id, state: 'online', model: null, release: null, sha256: null, at: iso(), agent: `apprentice-edge/${version}`, protocolVersion: 2, capabilities: this.capabilities, platform: this.platform };
    await this.client.publishAsync(topics.status(this.id), JSON.stringify(s), { qos: 1, retain: true });
  }

  async event(type: DeviceEvent['type'], m: AgentManifest, running: string, reason?: NonNullable<DeviceEvent['agent']>['reason']): Promise<void> {
    const e: DeviceEvent = { v: 1, deviceId: this.id, at: iso(), type, model: null, release: null, sha256: null, agent: { version: m.version, agentSeq: m.agentSeq, running, ...(reason ? { reason } : {}) } };
    await this.client.publishAsync(topics.events(this.id), JSON.stringify(e), { qos: 1 });
  }
}

/** Installs and commits whatever it is given. */
const commits = async (d: FakeAgentDevice, m: AgentManifest): Promise<void> => {
  await d.sendStatus(m.version);
  await d.event('agent_committed', m, m.version);
};
/** Commits but its event is lost: only its status says it runs the new version (as good as agent_committed). */
const statusOnly = async (d: FakeAgentDevice, m: AgentManifest): Promise<void> => d.sendStatus(m.version);
/** Starts the new version, which fails its health check: back on the old one, reported. */
const rollsBack = (old: string) => async (d: FakeAgentDevice, m: AgentManifest): Promise<void> => {
  if (m.version === old) return d.sendStatus(old);
  await d.event('agent_rolled_back', m, old, 'health_timeout');
};

describe.each(brokerMatrix())('agent rollouts over $name', ({ start, features }) => {
  let broker: TestBroker;
  let fx: FleetFixture;
  let work: string;
  const closers: (() => Promise<unknown>)[] = [];

  beforeAll(async () => {
    broker = await start();
  });
  afterAll(async () => {
    await broker?.stop();
  });
  beforeEach(async () => {
    fx = new FleetFixture();
    work = mkdtempSync(join(tmpdir(), 'agent-rollout-'));
    const ids = ['pi-1', 'pi-2', 'pi-3', 'pi-arm', 'pi-old', 'pi-new'];
    await clearRetained(broker.url, ids.flatMap((id) => [topics.agent(id), topics.status(id)]));
    // pi-new is provisioned by the test that needs a device the registry did not know when a rollout started.
    for (const id of ids.filter((i) => i !== 'pi-new')) fx.addDevice(id, { online: false });
  });
  afterEach(async () => {
    for (const c of closers.splice(0).reverse()) await c();
    fx.dispose();
    rmSync(work, { recursive: true, force: true });
  });

  /** Agent 0.1.0 and 0.2.0 for linux-x64 pushed (agentSeq 1, 2); the cloud with a rollout engine ticking every 100 ms. */
  async function startCloud(o: { metrics?: PromRegistry; more?: { version: string; upgradeFrom: string[] }[] } = {}): Promise<RolloutEngine> {
    for (const r of [{ version: '0.1.0' }, { version: '0.2.0' }, ...(o.more ?? [])]) await pushTinyAgent(fx, work, r);
    const cloud = await startAgentCloud(fx, broker.url, { sharedSubscriptions: features.sharedSubscriptions, reissueAgent: true, ...(o.metrics ? { metrics: o.metrics } : {}) });
    closers.push(() => cloud.dispose());
    return cloud.engine;
  }

  async function device(id: string, onRelease: (d: FakeAgentDevice, m: AgentManifest) => Promise<void>, o: { platform?: string; capabilities?: string[]; version?: string } = {}): Promise<FakeAgentDevice> {
    const d = await FakeAgentDevice.connect(broker.url, id, { version: o.version ?? '0.1.0', platform: o.platform ?? 'linux-x64', capabilities: o.capabilities ?? [DEVICE_CAPABILITIES.agentUpdate], publicKeyPem: fx.key.publicKeyPem, onRelease });
    closers.push(() => d.client.endAsync(true));
    await waitFor(() => fx.device(id)?.platform === (o.platform ?? 'linux-x64'), 5000, { message: `${id}'s status ingested` });
    return d;
  }

  const rows = (id: string) => Object.fromEntries(fx.db.select().from(rolloutDevices).where(eq(rolloutDevices.rolloutId, id)).all().map((r) => [r.deviceId, r]));

  it('upgrade: linux-x64 devices with agent-update get 0.2.0 in waves and commit (by event or by status alone); the arm64 one and the one without agent-update are skipped with the reason, sent nothing', async () => {
    const engine = await startCloud();
    const devs = [await device('pi-1', commits), await device('pi-2', commits), await device('pi-3', statusOnly)];
    const arm = await device('pi-arm', commits, { platform: 'linux-arm64' });
    const old = await device('pi-old', commits, { capabilities: [] });
    const r = await engine.create({ model: 'agent:linux-x64', kind: 'agent', releaseSeq: 2, target: { kind: 'all' }, waves: [0.34, 1], soakSeconds: 0 });
    await waitFor(async () => (await engine.get(r.id))!.rollout.state === 'completed', 15_000, { message: `rollout completes (${JSON.stringify((await engine.get(r.id))?.counts)})` });
    const got = rows(r.id);
    for (const id of ['pi-1', 'pi-2', 'pi-3']) {
      expect(got[id]!.state, id).toBe('installed');
      expect(fx.device(id)!.agent).toBe('apprentice-edge/0.2.0');
      expect(fx.device(id)!.desiredAgentSeq).toBe(2);
    }
    expect(got['pi-3']!.reason).toBe('status reports the release running');
    expect(got['pi-arm']).toMatchObject({ state: 'incompatible', reason: 'platform linux-arm64, the release is for linux-x64' });
    expect(got['pi-old']).toMatchObject({ state: 'incompatible', reason: 'needs agent-update (the daemon cannot update itself)' });
    expect(arm.received).toEqual([]);
    expect(old.received).toEqual([]);
    expect(devs.map((d) => d.received.map((m) => m.agentSeq))).toEqual([[2], [2], [2]]);
    // The signed listing and artifact describe the pushed tarball, whose chunks are retained.
    const rel = fx.db.select().from(agentReleases).where(eq(agentReleases.agentSeq, 2)).get()!;
    expect(devs[0]!.received[0]!.artifact.sha256).toBe(rel.sha256);
    const probe = await connectClient(broker.url, `probe-${randomUUID().slice(0, 6)}`);
    closers.push(() => probe.endAsync(true));
    const chunk = new Promise<Buffer>((resolve) => probe.on('message', (t, p) => t === topics.artifactChunk(rel.sha256, 0) && resolve(p)));
    await probe.subscribeAsync(topics.artifactChunk(rel.sha256, 0), { qos: 1 });
    expect((await chunk).length).toBe(Math.min(rel.bytes, devs[0]!.received[0]!.artifact.chunkSize));
    // The committed events are stored with their agent part.
    const ev = fx.db.select().from(deviceEvents).where(eq(deviceEvents.deviceId, 'pi-1')).all().find((e) => e.type === 'agent_committed');
    expect(ev?.detail).toBe('agent 0.2.0 (agentSeq 2), running 0.2.0');
  });

  it('a device that rolls back is a failure: past the threshold the rollout rolls back by re-issuing 0.1.0 at a higher agentSeq', async () => {
    const engine = await startCloud();
    const devs = [await device('pi-1', rollsBack('0.1.0')), await device('pi-2', rollsBack('0.1.0')), await device('pi-3', rollsBack('0.1.0'))];
    const r = await engine.create({ model: 'agent:linux-x64', kind: 'agent', releaseSeq: 2, target: { kind: 'all' }, waves: [1], soakSeconds: 0, minFailures: 2, failureThreshold: 0.5 });
    await waitFor(async () => (await engine.get(r.id))!.rollout.state === 'rolled_back', 15_000, { message: `rollout rolls back (${JSON.stringify((await engine.get(r.id))?.rollout)})` });
    const after = (await engine.get(r.id))!.rollout;
    const reissue = fx.db.select().from(agentReleases).where(eq(agentReleases.agentSeq, after.rollbackSeq!)).get()!;
    expect(reissue).toMatchObject({ version: '0.1.0', reissueOf: 1 });
    expect(reissue.agentSeq).toBeGreaterThan(2);
    // Every device that was given 0.2.0 gets the re-issue of 0.1.0 (a higher agentSeq, so it passes the floor).
    await waitFor(() => devs.every((d) => d.received.some((m) => m.agentSeq === reissue.agentSeq)), 5000, { message: 'the re-issue reaches every device' });
    const m = devs[0]!.received.at(-1)!;
    expect(m).toMatchObject({ version: '0.1.0', agentSeq: reissue.agentSeq, reissueOf: 1 });
    for (const d of devs) expect(fx.device(d.id)!.desiredAgentSeq).toBe(reissue.agentSeq);
  });

  it('below the threshold a rolled-back device is quarantined on a re-issue of its previous version; the others complete', async () => {
    const engine = await startCloud();
    await device('pi-1', commits);
    await device('pi-2', commits);
    const bad = await device('pi-3', rollsBack('0.1.0'));
    const r = await engine.create({ model: 'agent:linux-x64', kind: 'agent', releaseSeq: 2, target: { kind: 'all' }, waves: [1], soakSeconds: 0, minFailures: 2, failureThreshold: 0.5 });
    await waitFor(async () => (await engine.get(r.id))!.rollout.state === 'completed', 15_000, { message: `rollout completes (${JSON.stringify((await engine.get(r.id))?.counts)})` });
    const got = rows(r.id);
    expect([got['pi-1']!.state, got['pi-2']!.state, got['pi-3']!.state]).toEqual(['installed', 'installed', 'quarantined']);
    expect(got['pi-3']!.reason).toMatch(/^health_timeout; kept on release 1 \(re-issued as \d+\)$/);
    await waitFor(() => bad.received.some((m) => m.version === '0.1.0'), 5000, { message: 'pi-3 receives the re-issue of 0.1.0' });
    const q = bad.received.at(-1)!;
    expect(q).toMatchObject({ version: '0.1.0', reissueOf: 1 });
    expect(fx.device('pi-3')!.desiredAgentSeq).toBe(q.agentSeq);
  });

  it('a revoked device loses its retained agent release', async () => {
    const engine = await startCloud();
    const d = await device('pi-1', commits);
    const r = await engine.create({ model: 'agent:linux-x64', kind: 'agent', releaseSeq: 2, target: { kind: 'devices', ids: ['pi-1'] }, waves: [1], soakSeconds: 0 });
    await waitFor(async () => (await engine.get(r.id))!.rollout.state === 'completed', 10_000, { message: 'rollout completes' });
    const empties: number[] = [];
    d.client.on('message', (t, p) => t === topics.agent('pi-1') && p.length === 0 && empties.push(1));
    await engine.onDeviceRevoked('pi-1');
    await waitFor(() => empties.length === 1, 5000, { message: 'the retained agent release cleared' });
    expect(fx.device('pi-1')!.desiredAgentSeq).toBeNull();
  });
  /** apprentice_cloud_agent_converge_total by result. */
  const convergeCounts = async (reg: PromRegistry): Promise<Record<string, number>> =>
    Object.fromEntries(((await reg.getSingleMetric('apprentice_cloud_agent_converge_total')?.get())?.values ?? []).map((v) => [String(v.labels.result), v.value]));

  it('late joiners converge: a device first reporting its platform and agent-update after the rollout completed gets 0.2.0; a newer one and one without agent-update get nothing (counted)', async () => {
    const metrics = new PromRegistry();
    const engine = await startCloud({ metrics });
    await device('pi-1', commits);
    const r = await engine.create({ model: 'agent:linux-x64', kind: 'agent', releaseSeq: 2, target: { kind: 'all' }, waves: [1], soakSeconds: 0 });
    await waitFor(async () => (await engine.get(r.id))!.rollout.state === 'completed', 15_000, { message: `rollout completes (${JSON.stringify((await engine.get(r.id))?.counts)})` });
    // Never seen when the rollout ran (no platform yet): skipped then, so not a member that was sent anything.
    expect(rows(r.id)['pi-2']).toMatchObject({ state: 'incompatible' });
    const late = await device('pi-2', commits);
    await waitFor(() => fx.device('pi-2')!.agent === 'apprentice-edge/0.2.0', 10_000, { message: 'the late device converges to 0.2.0' });
    expect(late.received.map((m) => [m.version, m.agentSeq])).toEqual([['0.2.0', 2]]);
    expect(fx.device('pi-2')!.desiredAgentSeq).toBe(2);
    // Its chunks are on the broker (the MQTT chunk source can fetch them).
    const sha = late.received[0]!.artifact.sha256;
    const probe = await connectClient(broker.url, `probe-${randomUUID().slice(0, 6)}`);
    closers.push(() => probe.endAsync(true));
    const chunk = new Promise<Buffer>((resolve) => probe.on('message', (t, p) => t === topics.artifactChunk(sha, 0) && resolve(p)));
    await probe.subscribeAsync(topics.artifactChunk(sha, 0), { qos: 1 });
    expect((await chunk).length).toBeGreaterThan(0);
    const newer = await device('pi-3', commits, { version: '0.3.0' });
    const old = await device('pi-old', commits, { capabilities: [] });
    await waitFor(async () => (await convergeCounts(metrics)).newer === 1 && (await convergeCounts(metrics)).no_capability === 1, 10_000, { message: `refusals counted (${JSON.stringify(await convergeCounts(metrics))})` });
    expect(await convergeCounts(metrics)).toEqual({ sent: 1, newer: 1, no_capability: 1 });
    expect(newer.received).toEqual([]);
    expect(old.received).toEqual([]);
    expect(fx.device('pi-3')!.desiredAgentSeq).toBeNull();
    // A second status of the converged device sends nothing again.
    await late.sendStatus();
    await new Promise((res) => setTimeout(res, 300));
    expect(late.received).toHaveLength(1);
    expect((await convergeCounts(metrics)).sent).toBe(1);
  });

  it('a device that joins while the rollout is in its fleet stage gets the release in that rollout (its skipped row revived, or a new one); never a downgrade; paused, it is given on resume', async () => {
    const metrics = new PromRegistry();
    const engine = await startCloud({ metrics });
    // pi-1 never answers: the single wave (fleet stage, no canaries) stays open until its deadline.
    const silent = await device('pi-1', async () => {});
    const r = await engine.create({ model: 'agent:linux-x64', kind: 'agent', releaseSeq: 2, target: { kind: 'all' }, waves: [1], soakSeconds: 0, deviceTimeoutSeconds: 3600 });
    await waitFor(() => silent.received.length === 1, 10_000, { message: 'pi-1 given 0.2.0' });
    expect((await engine.get(r.id))!.rollout.state).toBe('fleet');
    // No status yet when the rollout started: skipped (platform unknown).
    expect(rows(r.id)['pi-2']).toMatchObject({ state: 'incompatible' });

    const late = await device('pi-2', commits);
    await waitFor(() => rows(r.id)['pi-2']?.state === 'installed', 10_000, { message: `pi-2 joins and installs (${JSON.stringify(rows(r.id)['pi-2'])})` });
    expect((await engine.get(r.id))!.rollout.state).toBe('fleet');
    expect(late.received.map((m) => [m.version, m.agentSeq])).toEqual([['0.2.0', 2]]);
    expect(fx.device('pi-2')).toMatchObject({ desiredAgentSeq: 2, agent: 'apprentice-edge/0.2.0' });
    const joined = (await engine.get(r.id))!.transitions.filter((t) => t.deviceId === 'pi-2').map((t) => [t.fromState, t.toState]).reverse();
    expect(joined).toEqual([[null, 'incompatible'], ['incompatible', 'waiting'], ['waiting', 'desired'], ['desired', 'installed']]);

    // A device running a newer agent, and one without agent-update, join nothing and are sent nothing.
    const newer = await device('pi-3', commits, { version: '0.3.0' });
    const old = await device('pi-old', commits, { capabilities: [] });
    await waitFor(async () => (await convergeCounts(metrics)).newer === 1 && (await convergeCounts(metrics)).no_capability === 1, 10_000, { message: `refusals counted (${JSON.stringify(await convergeCounts(metrics))})` });
    expect(newer.received).toEqual([]);
    expect(old.received).toEqual([]);
    expect([rows(r.id)['pi-3']!.state, rows(r.id)['pi-old']!.state]).toEqual(['incompatible', 'incompatible']);
    expect(fx.device('pi-3')!.desiredAgentSeq).toBeNull();

    // Paused: a device new to the registry joins (a waiting row in the current wave) and is sent nothing until resume.
    await engine.pause(r.id);
    fx.addDevice('pi-new', { online: false });
    const fresh = await device('pi-new', commits);
    await waitFor(async () => (await convergeCounts(metrics)).joined_paused === 1, 10_000, { message: `pi-new joins the paused rollout (${JSON.stringify(await convergeCounts(metrics))})` });
    expect(rows(r.id)['pi-new']).toMatchObject({ state: 'waiting', wave: 0, canary: false });
    await new Promise((res) => setTimeout(res, 300));
    expect(fresh.received).toEqual([]);
    await engine.resume(r.id);
    await waitFor(() => rows(r.id)['pi-new']?.state === 'installed', 10_000, { message: `pi-new given 0.2.0 on resume (${JSON.stringify(rows(r.id)['pi-new'])})` });
    expect(fresh.received.map((m) => m.agentSeq)).toEqual([2]);

    // pi-1 finally commits: the rollout completes with the joiners counted as installed.
    await commits(silent, silent.received[0]!);
    await waitFor(async () => (await engine.get(r.id))!.rollout.state === 'completed', 10_000, { message: 'rollout completes' });
    // pi-arm never reported: still skipped.
    expect((await engine.get(r.id))!.counts).toMatchObject({ installed: 3, incompatible: 3, waiting: 0, desired: 0 });
    expect(await convergeCounts(metrics)).toEqual({ sent: 1, joined_paused: 1, newer: 1, no_capability: 1 });
    // A later status of a joiner sends nothing again (it was given the release in the rollout).
    await late.sendStatus();
    await new Promise((res) => setTimeout(res, 300));
    expect(late.received).toHaveLength(1);
  });

  it("late joiners converge only where the release's upgradeFrom lists their version", async () => {
    const metrics = new PromRegistry();
    const engine = await startCloud({ metrics, more: [{ version: '0.3.0', upgradeFrom: ['0.2.0'] }] });
    await device('pi-1', commits, { version: '0.2.0' });
    const r = await engine.create({ model: 'agent:linux-x64', kind: 'agent', releaseSeq: 3, target: { kind: 'all' }, waves: [1], soakSeconds: 0 });
    await waitFor(async () => (await engine.get(r.id))!.rollout.state === 'completed', 15_000, { message: `rollout completes (${JSON.stringify((await engine.get(r.id))?.counts)})` });
    const stuck = await device('pi-2', commits, { version: '0.1.0' });
    const ok = await device('pi-3', commits, { version: '0.2.0' });
    await waitFor(() => fx.device('pi-3')!.agent === 'apprentice-edge/0.3.0', 10_000, { message: 'pi-3 converges to 0.3.0' });
    await waitFor(async () => (await convergeCounts(metrics)).not_upgradable === 1, 10_000, { message: `pi-2 refused (${JSON.stringify(await convergeCounts(metrics))})` });
    expect(ok.received.map((m) => m.version)).toEqual(['0.3.0']);
    expect(stuck.received).toEqual([]);
    expect(fx.device('pi-2')!.desiredAgentSeq).toBeNull();
  });
});
