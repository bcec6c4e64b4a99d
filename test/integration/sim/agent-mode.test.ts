/**
 * `apprentice sim --agent-root` (edge/sim/agent.ts): two simulated devices in agent mode against a real
 * cloud side (registry, ingest, publisher, rollout engine) over a real broker (aedes). The agent release
 * is a tiny bundle packed like `apprentice agent build`; each device downloads it over MQTT chunks,
 * unpacks it into its own root, switches `current`, "restarts" in process and commits through the real
 * AgentLifecycle; the rollout completes on their status and events.
 */
import { existsSync, mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deviceEvents, rolloutDevices } from '../../../cloud/registry/schema.js';
import { SimFleet } from '../../../edge/sim/index.js';
import { simPlan } from '../../../edge/sim/shares.js';
import { agentPlatform, readAgentVersion } from '../../../edge/status/index.js';
import { pushTinyAgent, startAgentCloud } from '../../helpers/agent-cloud.js';
import { startAedes, waitFor, type AedesBroker } from '../../helpers/broker.js';
import { FleetFixture } from '../../unit/fleet/fixtures.js';

describe('sim agent mode', () => {
  let broker: AedesBroker;
  let fx: FleetFixture;
  let work: string;
  const closers: (() => Promise<unknown>)[] = [];

  beforeAll(async () => {
    broker = await startAedes();
    fx = new FleetFixture();
    work = mkdtempSync(join(tmpdir(), 'sim-agent-'));
  });
  afterAll(async () => {
    for (const c of closers.splice(0).reverse()) await c().catch(() => undefined);
    await broker?.stop();
    fx?.dispose();
    rmSync(work, { recursive: true, force: true });
  });

  it('two devices install a pushed agent release with the real installer and commit it; the rollout completes', async () => {
    const platform = agentPlatform();
    if (platform !== 'linux-x64' && platform !== 'linux-arm64') {
      console.log(`sim agent mode test: skipped, agent bundles exist for linux-x64/arm64 only (this is ${platform})`);
      return;
    }
    const from = readAgentVersion().version;
    const next = '99.0.0';
    const rel = await pushTinyAgent(fx, work, { version: next, platform });
    const { engine, dispose } = await startAgentCloud(fx, broker.url, { cloudInfo: true });
    closers.push(dispose);

    const agentRoot = join(work, 'agents');
    const fleet = new SimFleet({ devices: 2, mqttUrl: broker.url, dataDir: join(work, 'devices'), trustedKeys: fx.trusted, prefix: 'ag', agentRoot });
    closers.push(() => fleet.stop());
    for (let i = 0; i < 2; i++) fx.addDevice(SimFleet.deviceId('ag', i), { online: false });
    await fleet.start();
    const ids = [0, 1].map((i) => SimFleet.deviceId('ag', i));
    await waitFor(() => ids.every((id) => fx.device(id)?.platform === platform && fx.device(id)?.agent === `apprentice-edge/${from}`), 10_000, { message: 'sim status (platform, agent version) ingested' });

    const r = await engine.create({ model: `agent:${platform}`, kind: 'agent', releaseSeq: rel.agentSeq, target: { kind: 'all' }, waves: [0.5, 1], soakSeconds: 0 });
    await waitFor(async () => (await engine.get(r.id))!.rollout.state === 'completed', 20_000, { message: `rollout completes (${JSON.stringify((await engine.get(r.id))?.counts)})` });

    expect(fleet.stats().agents).toEqual({ [next]: 2 });
    const rows = fx.db.select().from(rolloutDevices).where(eq(rolloutDevices.rolloutId, r.id)).all();
    expect(rows.map((x) => x.state).sort()).toEqual(['installed', 'installed']);
    for (const id of ids) {
      expect(fx.device(id)!.agent).toBe(`apprentice-edge/${next}`);
      const root = join(agentRoot, id);
      // The real layout: `current` points at the unpacked version, whose files are the bundle's.
      expect(readlinkSync(join(root, 'current'))).toContain(next);
      expect(JSON.parse(readFileSync(join(root, next, 'package.json'), 'utf8')).version).toBe(next);
      expect(existsSync(join(root, next, 'dist/bin/edge.js'))).toBe(true);
      await waitFor(() => fx.db.select().from(deviceEvents).where(eq(deviceEvents.deviceId, id)).all().some((e) => e.type === 'agent_committed'), 5_000, { message: `${id}'s agent_committed stored` });
    }
    await waitFor(() => fleet.devices.every((d) => d.agent!.commits === 1), 5_000, { message: 'both trials ended in a commit' });
  }, 40_000);
});

describe('sim agent mode with --agent-fail-rate', () => {
  it('the picked device never passes its health commit: the real lifecycle rolls it back, the old version reports agent_rolled_back, the cloud counts a failure', async () => {
    const platform = agentPlatform();
    if (platform !== 'linux-x64' && platform !== 'linux-arm64') {
      console.log(`sim agent fail-rate test: skipped, agent bundles exist for linux-x64/arm64 only (this is ${platform})`);
      return;
    }
    const broker = await startAedes();
    const fx = new FleetFixture();
    const work = mkdtempSync(join(tmpdir(), 'sim-agent-fail-'));
    const closers: (() => Promise<unknown>)[] = [];
    try {
      const from = readAgentVersion().version;
      const next = '99.1.0';
      const rel = await pushTinyAgent(fx, work, { version: next, platform });
      const { engine, dispose } = await startAgentCloud(fx, broker.url, { cloudInfo: true });
      closers.push(dispose);

      const n = 4;
      const shares = { failAgentTrial: 0.25 };
      const failing = simPlan(n, shares).failAgentTrial.map((i) => SimFleet.deviceId('af', i));
      expect(failing).toHaveLength(1);
      const fleet = new SimFleet({ devices: n, mqttUrl: broker.url, dataDir: join(work, 'devices'), trustedKeys: fx.trusted, prefix: 'af', agentRoot: join(work, 'agents'), shares, agentHealthDeadlineMs: 1_500 });
      closers.push(() => fleet.stop());
      const ids = Array.from({ length: n }, (_, i) => SimFleet.deviceId('af', i));
      for (const id of ids) fx.addDevice(id, { online: false });
      await fleet.start();
      expect(fleet.stats().failAgentTrial).toBe(1);
      await waitFor(() => ids.every((id) => fx.device(id)?.platform === platform), 10_000, { message: 'sim statuses ingested' });

      // Below the threshold (1 of 4 < 0.5, minFailures 2): the failed device is quarantined, the rollout completes.
      const r = await engine.create({ model: `agent:${platform}`, kind: 'agent', releaseSeq: rel.agentSeq, target: { kind: 'all' }, waves: [1], soakSeconds: 0, minFailures: 2, failureThreshold: 0.5 });
      await waitFor(async () => (await engine.get(r.id))!.rollout.state === 'completed', 30_000, { message: `rollout completes (${JSON.stringify((await engine.get(r.id))?.counts)})` });
      const rows = Object.fromEntries(fx.db.select().from(rolloutDevices).where(eq(rolloutDevices.rolloutId, r.id)).all().map((x) => [x.deviceId, x]));
      const bad = failing[0]!;
      expect(rows[bad]!.state).toBe('quarantined');
      expect(rows[bad]!.reason).toMatch(/^health_timeout/);
      for (const id of ids.filter((x) => x !== bad)) expect(rows[id]!.state, id).toBe('installed');
      const ev = fx.db.select().from(deviceEvents).where(eq(deviceEvents.deviceId, bad)).all().find((e) => e.type === 'agent_rolled_back');
      expect(ev?.detail).toBe(`agent ${next} (agentSeq ${rel.agentSeq}), running ${from}: version ${next} was not healthy in time; back on ${from}`);
      const dev = fleet.devices.find((d) => d.id === bad)!;
      await waitFor(() => dev.agent!.rollbacks === 1, 5_000, { message: 'the rollback reported by the old version' });
      expect(dev.agent!.commits).toBe(0);
      expect(dev.agent!.version).toBe(from);
      await waitFor(() => fx.device(bad)!.agent === `apprentice-edge/${from}`, 5_000, { message: 'the failed device reports its old version' });
      expect(fleet.stats().agents).toEqual({ [next]: 3, [from]: 1 });
    } finally {
      for (const c of closers.reverse()) await c().catch(() => undefined);
      await broker.stop();
      fx.dispose();
      rmSync(work, { recursive: true, force: true });
    }
  }, 60_000);
});
