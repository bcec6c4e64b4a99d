/**
 * Issue 14 end to end: the real cloud (in process, on a private Mosquitto, as the fault drills run it),
 * agent releases packed by the real packer (cloud/agents/pack.ts) and pushed through `POST /v1/agents`,
 * agent rollouts created through `POST /v1/rollouts`, and one device provisioned through
 * `POST /v1/devices` running under the real unit file's restart policy (fake systemd) and the real
 * launcher in a --prefix root. Its program (test/fixtures/fake-agent-mqtt.ts) runs the real edge/agent
 * trial, commit, rollback and installer code and downloads over the cloud's retained MQTT chunks (the
 * cloud has no public URL, so there is no HTTP source).
 *
 * 1.0.0 (installed as install-edge.sh leaves it) → 2.0.0 commits and the rollout completes with the
 * device's status on 2.0.0; then 3.0.0 never becomes healthy → the device rolls back to 2.0.0 and the
 * cloud records `agent_rolled_back` as a failure, rolling the rollout back.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { eq } from 'drizzle-orm';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deviceEvents, rolloutDevices } from '../../cloud/registry/schema.js';
import { readMarker } from '../../edge/agent/index.js';
import { agentApi } from '../helpers/agent-api.js';
import { skipWithoutMosquitto, waitFor } from '../helpers/broker.js';
import { AGENT_UNIT as UNIT, fakeAgentFiles, fakeAgentPrefix } from '../helpers/fake-agent-device.js';
import { readUnitPolicy, runService, type ServiceRun } from '../helpers/fake-systemd.js';
import { FaultWorld, TOKEN } from './fault-harness.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const FAKE_MAIN = join(REPO, 'test/fixtures/fake-agent-mqtt.ts');
const FAKE_BUILT = join(REPO, 'node_modules/.cache/apprentice-test', `fake-agent-mqtt-${process.pid}.mjs`);
const PLATFORM = `${process.platform}-${process.arch}`;
const DEVICE = 'pi-agent-1';
/** Incompressible filler: the tarball spans several of the cloud's 128 KiB chunks. */
const FILLER = randomBytes(300 * 1024).toString('base64');

const bundleFiles = (version: string, behavior: string) => fakeAgentFiles(version, behavior, { path: 'dist/edge/filler.txt', data: FILLER });

const notAgentPlatform = !['linux-x64', 'linux-arm64'].includes(PLATFORM);
if (notAgentPlatform) console.warn(`skipping the agent update end-to-end test: ${PLATFORM} is not an agent platform`);
const skip = notAgentPlatform || skipWithoutMosquitto();

describe.skipIf(skip)('agent update end to end: cloud API → rollout → MQTT chunks → launcher → health commit / rollback', { timeout: 120_000 }, () => {
  let w: FaultWorld;
  let api: ReturnType<typeof agentApi>;
  beforeAll(async () => {
    await build({ entryPoints: [FAKE_MAIN], bundle: true, platform: 'node', format: 'esm', target: 'node20', packages: 'external', outfile: FAKE_BUILT, logLevel: 'error' });
    w = await FaultWorld.create();
    api = agentApi(w.cloud!.apiUrl, TOKEN);
  });
  afterAll(async () => {
    rmSync(FAKE_BUILT, { force: true });
    await w?.dispose();
  });

  const call = (method: string, path: string, body?: unknown) => api.call(method, path, body);
  /** `apprentice agent build` on a fake bundle (the real packer), then `apprentice agent push` (the real API). */
  const pushAgent = (version: string, behavior: string) => api.pushAgent(w.dir, { version, platform: PLATFORM, files: bundleFiles(version, behavior) });

  const rolloutState = async (id: string): Promise<string> => (await call('GET', `/v1/rollouts/${id}`)).state;
  const eventsOf = (type: string) => w.registry.db.select().from(deviceEvents).where(eq(deviceEvents.deviceId, DEVICE)).all().filter((e) => e.type === type);

  it('2.0.0 commits and completes; 3.0.0 never gets healthy, is rolled back on the device and recorded as a failure', async () => {
    // The device as install-edge.sh leaves it: 1.0.0 in <prefix>/opt/apprentice with the launcher; config from provisioning.
    const { prefix, app, data, map } = fakeAgentPrefix(bundleFiles('1.0.0', 'good'), 'apprentice-agent-e2e-');
    const config = await w.provision(DEVICE, { dataDir: data });
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      NODE_ENV: 'test',
      FAKE_AGENT_MAIN: FAKE_BUILT,
      FAKE_AGENT_DATA: data,
      FAKE_AGENT_DEVICE: JSON.stringify({ deviceId: config.deviceId, mqtt: config.mqtt, trustedKeys: config.trustedKeys }),
      FAKE_AGENT_DEADLINE_MS: '3000',
    };
    let run: ServiceRun | undefined;
    let failure: Error | undefined;
    const service = runService({ policy: readUnitPolicy(UNIT), map, env, cwd: app, restartSecMs: 50, maxStarts: 8, timeoutMs: 110_000 }).then((r) => (run = r));
    const starts = () => (existsSync(join(data, 'starts.jsonl')) ? readFileSync(join(data, 'starts.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { version: string; pid: number }) : []);
    const deviceRow = () => call('GET', `/v1/devices/${DEVICE}`);
    try {
      await waitFor(async () => (await deviceRow()).agent === 'apprentice-edge/1.0.0', 30_000, { message: 'the device reports 1.0.0 and its platform', intervalMs: 200 });
      expect((await deviceRow()).platform).toBe(PLATFORM);

      // 2.0.0: pushed, rolled out, downloaded over MQTT chunks, installed, restarted (75), committed.
      const v2 = await pushAgent('2.0.0', 'good');
      expect(v2.bytes).toBeGreaterThan(2 * 128 * 1024);
      const r2 = await call('POST', '/v1/rollouts', { agent: { version: '2.0.0', platform: PLATFORM }, target: 'all', waves: [1], soakSeconds: 0, minFailures: 1, failureThreshold: 0 });
      await waitFor(async () => (await rolloutState(r2.id)) === 'completed', 40_000, { message: `rollout of 2.0.0 completes (${run ? JSON.stringify(run) : 'service running'})`, intervalMs: 200 });
      expect((await deviceRow()).agent).toBe('apprentice-edge/2.0.0');
      expect(w.registry.db.select().from(rolloutDevices).where(eq(rolloutDevices.rolloutId, r2.id)).get()).toMatchObject({ deviceId: DEVICE, state: 'installed' });
      expect(readlinkSync(join(data, 'agent/current'))).toBe('2.0.0');
      expect(await readMarker(join(data, 'agent'))).toMatchObject({ state: 'committed', pending: '2.0.0', agentSeq: v2.agentSeq });
      await waitFor(() => eventsOf('agent_committed').length === 1, 10_000, { message: 'agent_committed stored' });
      expect(eventsOf('agent_installed')).toHaveLength(1);
      // The download went through the MQTT chunk source (no HTTP URL in the manifest): the partial file is gone.
      const manifest = (await call('GET', `/v1/agents/2.0.0/${PLATFORM}`)).manifest as { artifact: { url?: string; chunks: string[] } };
      expect(manifest.artifact.url).toBeUndefined();
      expect(manifest.artifact.chunks.length).toBeGreaterThanOrEqual(3);

      // 3.0.0: installed, but never healthy: rolled back on the device, reported, a failure in the cloud.
      const v3 = await pushAgent('3.0.0', 'silent');
      const r3 = await call('POST', '/v1/rollouts', { agent: { version: '3.0.0', platform: PLATFORM }, target: 'all', waves: [1], soakSeconds: 0, minFailures: 1, failureThreshold: 0 });
      await waitFor(() => eventsOf('agent_rolled_back').length === 1, 40_000, { message: `agent_rolled_back stored (${run ? JSON.stringify(run) : 'service running'})`, intervalMs: 200 });
      const ev = eventsOf('agent_rolled_back')[0]!;
      expect(ev.detail).toMatch(/agent 3\.0\.0 \(agentSeq \d+\), running 2\.0\.0/);
      await waitFor(async () => (await rolloutState(r3.id)) === 'rolled_back', 20_000, { message: 'rollout of 3.0.0 rolls back', intervalMs: 200 });
      const member = w.registry.db.select().from(rolloutDevices).where(eq(rolloutDevices.rolloutId, r3.id)).get()!;
      expect(member.state).toBe('failed');
      expect(member.reason).toMatch(/health_timeout/);
      expect((await deviceRow()).agent).toBe('apprentice-edge/2.0.0');
      expect(readlinkSync(join(data, 'agent/current'))).toBe('2.0.0');
      expect(await readMarker(join(data, 'agent'))).toMatchObject({ state: 'rolled_back', pending: '3.0.0', reason: 'health_timeout', reported: true, agentSeq: v3.agentSeq });
      // The failed version is deleted once the rollback is reported.
      await waitFor(() => !existsSync(join(data, 'agent/3.0.0')), 10_000, { message: 'agent/3.0.0 deleted' });
      // The rollback re-issues 2.0.0 at a higher agentSeq; the device, already on it, takes its seq and says so.
      const rolledBack = await call('GET', `/v1/rollouts/${r3.id}`);
      await waitFor(() => eventsOf('agent_committed').length === 2, 20_000, { message: 'the re-issue of 2.0.0 acknowledged', intervalMs: 200 });
      expect(eventsOf('agent_committed')[1]!.detail).toMatch(/agent 2\.0\.0 \(agentSeq \d+\), running 2\.0\.0/);
      expect(rolledBack.rollbackRelease).toBeGreaterThan(v3.agentSeq);
      expect(eventsOf('agent_committed')[1]!.detail).toContain(`(agentSeq ${rolledBack.rollbackRelease})`);
      // Every start ran a complete version: 1.0.0, 2.0.0, 3.0.0 (its trial), 2.0.0 again.
      expect(starts().map((s) => s.version)).toEqual(['1.0.0', '2.0.0', '3.0.0', '2.0.0']);
    } catch (err) {
      failure = err as Error;
      failure.message += `\nstarts: ${JSON.stringify(starts())}\ndevice: ${JSON.stringify(await deviceRow().catch((e: Error) => e.message))}`;
    } finally {
      const last = starts().at(-1);
      if (last && !run) {
        try {
          process.kill(last.pid, 'SIGTERM');
        } catch {
          // already gone
        }
      }
      await service;
      rmSync(prefix, { recursive: true, force: true });
    }
    // The device's own output (launcher and agent) tells what went wrong.
    if (failure) throw new Error(`${failure.message}\n--- device output ---\n${run?.output.slice(-4000)}`, { cause: failure });
    expect(run!.result, run!.output).toBe('exited');
    expect(run!.exits).toEqual([75, 75, 75, 0]);
  });
});
