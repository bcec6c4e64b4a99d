/**
 * Agent update bench (issue 14 item 5): `npm run bench:agent`. On a private Mosquitto (aedes where it is
 * not installed), the cloud's rollout side in this process (registry on SQLite, ingest, release publisher,
 * rollout engine: the same modules `apprentice cloud` runs, without its HTTP server), N simulated devices
 * in agent mode (`apprentice sim --agent-root`: real edge/agent installer, MQTT chunk download, unpack,
 * `current` switch, in-process restart, real lifecycle trial + commit). An agent release is pushed
 * (releaseAgent, as `POST /v1/agents`), a rollout started (waves BENCH_WAVES, default 0.1,1, soak
 * BENCH_SOAK s, default 2); timed from rollout creation until every device reports the new version.
 * Bytes moved per device: the MQTT payload bytes each device's client received on the artifact's chunk
 * topics, against the pushed tarball's size.
 *
 * Phase "fleet": BENCH_DEVICES (default 100) devices, a synthetic bundle of BENCH_BUNDLE_MB (default 2) MiB
 * of incompressible data packed by the real packer. Phase "real": when the real lean bundle exists
 * (BENCH_REAL_BUNDLE, default .cache/bench/apprentice-edge-0.2.0-linux-x64.tar.gz, from `apprentice agent
 * build`), BENCH_REAL_DEVICES (default 100) devices install it (about 3 GB through the broker, ~100 s). Results: test/bench/results/agent-rollout.json.
 *
 * BENCH_MODE=failures: one phase of BENCH_DEVICES devices of which BENCH_AGENT_FAIL_RATE (default 0.05,
 * `apprentice sim --agent-fail-rate`) never pass the health commit (deadline BENCH_AGENT_DEADLINE s,
 * default 5): they roll back, report `agent_rolled_back`, and the rollout (failureThreshold 0.5) quarantines
 * them while the rest install. Timed until every healthy device is on the new version and every failing
 * one's rollback is stored by the cloud. Results: test/bench/results/agent-rollout-failures.json.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { packAgentBundle } from '../../cloud/agents/pack.js';
import { releaseAgent } from '../../cloud/agents/release.js';
import { deviceCompatOf } from '../../cloud/fleet/device-compat.js';
import { Ingest } from '../../cloud/fleet/ingest.js';
import { CloudMqtt } from '../../cloud/fleet/mqtt.js';
import { ReleasePublisher } from '../../cloud/fleet/publisher.js';
import { RolloutEngine } from '../../cloud/rollouts/engine.js';
import { SimFleet } from '../../edge/sim/index.js';
import { simPlan } from '../../edge/sim/shares.js';
import { eq } from 'drizzle-orm';
import { deviceEvents, rolloutDevices } from '../../cloud/registry/schema.js';
import { readAgentVersion } from '../../edge/status/index.js';
import { topics } from '../../shared/protocol/index.js';
import { startAedes } from '../helpers/aedes.js';
import { mosquittoPath, startMosquitto } from '../helpers/mosquitto.js';
import { waitFor } from '../helpers/net.js';
import { FleetFixture } from '../unit/fleet/fixtures.js';
import { writeBenchResult } from './common.js';

const env = (k: string, d: string): string => process.env[k] ?? d;
const DEVICES = Number(env('BENCH_DEVICES', '100'));
const BUNDLE_MB = Number(env('BENCH_BUNDLE_MB', '2'));
const WAVES = env('BENCH_WAVES', '0.1,1').split(',').map(Number);
const SOAK = Number(env('BENCH_SOAK', '2'));
const REAL = resolve(env('BENCH_REAL_BUNDLE', '.cache/bench/apprentice-edge-0.2.0-linux-x64.tar.gz'));
const REAL_DEVICES = Number(env('BENCH_REAL_DEVICES', '100'));
const TIMEOUT_MS = Number(env('BENCH_TIMEOUT', '600')) * 1000;
const MODE = env('BENCH_MODE', 'rollout');
const FAIL_RATE = Number(env('BENCH_AGENT_FAIL_RATE', '0.05'));
const AGENT_DEADLINE_S = Number(env('BENCH_AGENT_DEADLINE', '5'));
const log = (m: string): void => void process.stderr.write(`[agent-bench] ${m}\n`);
const round = (x: number, d = 2): number => Math.round(x * 10 ** d) / 10 ** d;

/** A bundle like the lean one (dist/, node_modules/, package.json) with `mb` MiB of random bytes, packed by the real packer. */
async function syntheticBundle(dir: string, version: string, mb: number): Promise<string> {
  const root = join(dir, `bundle-${version}`);
  mkdirSync(join(root, 'dist/bin'), { recursive: true });
  mkdirSync(join(root, 'node_modules/blob'), { recursive: true });
  writeFileSync(join(root, 'dist/bin/edge.js'), `console.log('edge ${version}');\n`);
  writeFileSync(join(root, 'node_modules/blob/data.bin'), randomBytes(Math.round(mb * 2 ** 20)));
  writeFileSync(join(root, 'package.json'), JSON.stringify({ name: 'apprentice-edge', version }));
  const out = join(dir, `agent-${version}.tar.gz`);
  await packAgentBundle({ root, out, version, platform: 'linux-x64' });
  return out;
}

async function phase(name: string, devices: number, tarPath: string, version: string, failRate = 0): Promise<Record<string, unknown>> {
  const work = mkdtempSync(join(tmpdir(), `agent-bench-${name}-`));
  const broker = mosquittoPath() ? await startMosquitto() : await startAedes();
  const fx = new FleetFixture();
  const closers: (() => Promise<unknown>)[] = [];
  const bundleBytes = statSync(tarPath).size;
  try {
    // releaseAgent moves the pushed tarball into the cloud's store: push a copy.
    const pushed = join(work, 'push.tar.gz');
    copyFileSync(tarPath, pushed);
    const rel = await releaseAgent({ registry: fx.registry, dataDir: fx.dir, key: fx.key, tarPath: pushed, now: new Date() });
    const cloud = await CloudMqtt.create({ url: broker.url, clientId: `cloud-${randomUUID().slice(0, 8)}`, sharedSubscriptions: broker.kind === 'mosquitto', reconnectPeriod: 100 });
    const ingest = await Ingest.create({ registry: fx.registry, mqtt: cloud });
    const publisher = new ReleasePublisher({ mqtt: cloud, dataDir: fx.dir, compatOf: (id) => deviceCompatOf(fx.registry, id) });
    await publisher.publishCloudInfo();
    const engine = await RolloutEngine.create({ registry: fx.registry, publisher, reissue: fx.reissue, signals: ingest, tickSeconds: 0.2 });
    closers.push(() => cloud.dispose(), () => ingest.dispose(), () => engine.dispose());
    const shares = { failAgentTrial: failRate };
    const failing = new Set(simPlan(devices, shares).failAgentTrial.map((i) => SimFleet.deviceId('ab', i)));
    const fleet = new SimFleet({ devices, mqttUrl: broker.url, dataDir: join(work, 'devices'), trustedKeys: fx.trusted, prefix: 'ab', agentRoot: join(work, 'agents'), shares, agentHealthDeadlineMs: AGENT_DEADLINE_S * 1000 });
    closers.push(() => fleet.stop());
    for (let i = 0; i < devices; i++) fx.addDevice(SimFleet.deviceId('ab', i), { online: false });
    const tConnect = performance.now();
    await fleet.start();
    const ids = Array.from({ length: devices }, (_, i) => SimFleet.deviceId('ab', i));
    await waitFor(() => ids.every((id) => fx.device(id)?.platform === 'linux-x64'), 60_000, { message: 'every sim status ingested' });
    log(`${name}: ${devices} devices connected and known in ${round((performance.now() - tConnect) / 1000)} s`);
    const prefix = topicsPrefix(rel.sha256);
    const received = new Map<string, number>();
    for (const d of fleet.devices) d.mqtt.on('message', (t, p) => t.startsWith(prefix) && received.set(d.id, (received.get(d.id) ?? 0) + p.length));
    const done = new Map<string, number>();
    const t0 = performance.now();
    const r = await engine.create({ model: 'agent:linux-x64', kind: 'agent', releaseSeq: rel.agentSeq, target: { kind: 'all' }, waves: WAVES, soakSeconds: SOAK, ...(failRate > 0 ? { failureThreshold: 0.5 } : {}) });
    const healthy = ids.filter((id) => !failing.has(id));
    await waitFor(
      () => {
        for (const id of healthy) if (!done.has(id) && fx.device(id)?.agent === `apprentice-edge/${version}`) done.set(id, performance.now() - t0);
        return done.size === healthy.length;
      },
      TIMEOUT_MS,
      { message: `all on ${version} (${done.size}/${healthy.length})`, intervalMs: 100 },
    );
    const allOnNewS = (performance.now() - t0) / 1000;
    let failures: Record<string, unknown> | undefined;
    if (failing.size) {
      const rolledBack = () => fx.db.select({ d: deviceEvents.deviceId }).from(deviceEvents).where(eq(deviceEvents.type, 'agent_rolled_back')).all().map((e) => e.d);
      await waitFor(() => failing.size === new Set(rolledBack().filter((d) => failing.has(d))).size, TIMEOUT_MS, { message: 'every failing device reported its rollback', intervalMs: 100 });
      const allReportedS = (performance.now() - t0) / 1000;
      // The lifecycle counts a rollback once its report is written and the failed version deleted (just after the event).
      const failingSims = fleet.devices.filter((d) => failing.has(d.id));
      await waitFor(() => failingSims.reduce((n, d) => n + (d.agent?.rollbacks ?? 0), 0) === failing.size, 10_000, { message: 'every rollback counted by the sims' }).catch(() => undefined);
      const rows = fx.db.select().from(rolloutDevices).where(eq(rolloutDevices.rolloutId, r.id)).all();
      failures = {
        failRate,
        failingDevices: failing.size,
        healthDeadlineSeconds: AGENT_DEADLINE_S,
        allRollbacksStoredSeconds: round(allReportedS),
        rolledBackByLifecycle: fleet.devices.filter((d) => failing.has(d.id)).reduce((n, d) => n + (d.agent?.rollbacks ?? 0), 0),
        failingBackOnOldVersion: [...failing].filter((id) => fx.device(id)?.agent === `apprentice-edge/${readAgentVersion().version}`).length,
        failingRowStates: Object.fromEntries([...new Set(rows.filter((x) => failing.has(x.deviceId)).map((x) => x.state))].map((st) => [st, rows.filter((x) => failing.has(x.deviceId) && x.state === st).length])),
      };
    }
    // The status names the new version when the trial starts; the commit follows once it is acknowledged.
    await waitFor(() => fleet.devices.every((d) => failing.has(d.id) || d.agent!.commits === 1), 30_000, { message: 'every trial committed' }).catch(() => undefined);
    const allCommittedS = (performance.now() - t0) / 1000;
    await waitFor(async () => (await engine.get(r.id))!.rollout.state === 'completed', 30_000, { message: 'rollout completed' }).catch(() => undefined);
    const completedS = (performance.now() - t0) / 1000;
    const times = [...done.values()].sort((a, b) => a - b);
    const bytes = [...received.values()].sort((a, b) => a - b);
    const commits = fleet.devices.reduce((s, d) => s + (d.agent?.commits ?? 0), 0);
    return {
      devices,
      broker: broker.kind,
      bundle: { bytes: bundleBytes, mib: round(bundleBytes / 2 ** 20), kind: name === 'real' ? 'the real lean bundle (apprentice agent build)' : `synthetic: ${BUNDLE_MB} MiB random data packed by cloud/agents/pack.ts` },
      waves: WAVES,
      soakSeconds: SOAK,
      rolloutState: (await engine.get(r.id))!.rollout.state,
      allOnNewVersionSeconds: round(allOnNewS),
      allCommittedSeconds: round(allCommittedS),
      rolloutCompletedSeconds: round(completedS),
      perDeviceSeconds: { min: round(times[0]! / 1000), p10: round(times[Math.floor(times.length * 0.1)]! / 1000), p50: round(times[Math.floor(times.length / 2)]! / 1000), max: round(times.at(-1)! / 1000) },
      committedByLifecycle: commits,
      bytesPerDevice: { min: bytes[0] ?? 0, max: bytes.at(-1) ?? 0, mean: round(bytes.reduce((a, b) => a + b, 0) / Math.max(1, bytes.length), 0), devicesCounted: bytes.length },
      bytesPerDeviceOverBundle: round((bytes.reduce((a, b) => a + b, 0) / Math.max(1, bytes.length)) / bundleBytes, 3),
      ...(failures ? { healthyDevices: healthy.length, failures } : {}),
    };
  } finally {
    for (const c of closers.reverse()) await c().catch(() => undefined);
    await broker.stop();
    fx.dispose();
    rmSync(work, { recursive: true, force: true });
  }
}

/** Every chunk topic of the artifact: topics.artifactChunks(sha) minus its trailing `+`. */
const topicsPrefix = (sha256: string): string => topics.artifactChunks(sha256).slice(0, -1);

/** BENCH_MODE=failures: the fleet phase with --agent-fail-rate devices; its own results file. */
async function failuresMain(): Promise<void> {
  const loadBefore = loadavg();
  const dir = mkdtempSync(join(tmpdir(), 'agent-bench-bundle-'));
  try {
    const tar = await syntheticBundle(dir, '9.0.0', BUNDLE_MB);
    log(`failures: ${DEVICES} devices, ${FAIL_RATE} failing their trial, bundle ${statSync(tar).size} bytes`);
    const fleet = (await phase('fleet', DEVICES, tar, '9.0.0', FAIL_RATE)) as { healthyDevices: number; allOnNewVersionSeconds: number; rolloutState: string; failures: { failingDevices: number; allRollbacksStoredSeconds: number; failingRowStates: Record<string, number> } };
    const summary = `agent rollout with failures: ${DEVICES} sim devices, ${fleet.failures.failingDevices} never healthy (deadline ${AGENT_DEADLINE_S} s): ${fleet.healthyDevices} on the new agent in ${fleet.allOnNewVersionSeconds} s, every rollback stored by the cloud at ${fleet.failures.allRollbacksStoredSeconds} s, failing rows ${JSON.stringify(fleet.failures.failingRowStates)}, rollout ${fleet.rolloutState}`;
    const loadAfter = loadavg();
    const file = writeBenchResult('agent-rollout-failures', { from: readAgentVersion().version, fleet, loadavg: { before: loadBefore, after: loadAfter }, loadedMachine: (loadBefore[0] ?? 0) > cpus().length / 2, summary });
    console.log(summary);
    console.log(`→ ${file}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  if (MODE === 'failures') return failuresMain();
  const loadBefore = loadavg();
  const from = readAgentVersion().version;
  const dir = mkdtempSync(join(tmpdir(), 'agent-bench-bundle-'));
  const out: Record<string, unknown> = { from };
  try {
    const tar = await syntheticBundle(dir, '9.0.0', BUNDLE_MB);
    log(`fleet: ${DEVICES} devices, bundle ${statSync(tar).size} bytes`);
    out.fleet = await phase('fleet', DEVICES, tar, '9.0.0');
    log(JSON.stringify(out.fleet));
    if (existsSync(REAL) && REAL_DEVICES > 0) {
      out.real = await phase('real', REAL_DEVICES, REAL, '0.2.0');
      log(JSON.stringify(out.real));
    } else {
      out.real = { skipped: `no real bundle at ${REAL} (build it with apprentice agent build --version 0.2.0 --platform linux-x64 --out ${REAL})` };
      log(`real: skipped, no ${REAL}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const loadAfter = loadavg();
  const fleet = out.fleet as { allOnNewVersionSeconds: number; bytesPerDevice: { mean: number }; bundle: { bytes: number }; bytesPerDeviceOverBundle: number };
  const real = out.real as { devices?: number; allOnNewVersionSeconds?: number; bytesPerDevice?: { mean: number }; bundle?: { bytes: number }; bytesPerDeviceOverBundle?: number };
  const summary =
    `agent rollout: ${DEVICES} sim devices (real installer) on the new agent in ${fleet.allOnNewVersionSeconds} s (waves ${WAVES.join(',')}, soak ${SOAK} s, synthetic ${fleet.bundle.bytes} B bundle), ` +
    `${fleet.bytesPerDevice.mean} B/device = ${fleet.bytesPerDeviceOverBundle}× bundle` +
    (real.devices ? `; real lean bundle ${real.bundle!.bytes} B on ${real.devices} devices: ${real.allOnNewVersionSeconds} s, ${real.bytesPerDevice!.mean} B/device = ${real.bytesPerDeviceOverBundle}×` : '; real bundle not run');
  const file = writeBenchResult('agent-rollout', { ...out, loadavg: { before: loadBefore, after: loadAfter }, loadedMachine: (loadBefore[0] ?? 0) > cpus().length / 2, summary });
  console.log(summary);
  console.log(`→ ${file}`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
