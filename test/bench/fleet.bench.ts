/**
 * Fleet bench (issue 5, "Fleet simulation"): `npm run bench:fleet`. On a private Mosquitto and on aedes
 * (the cloud's EmbeddedBroker, in a child process so it does not share an event loop with the devices):
 *
 * - baseline: N plain MQTT subscribers, each subscribed to its `desired` topic and to the artifact's chunk
 *   topics; time from the first publish until every subscriber holds the manifest and every chunk byte;
 * - sim: N simulated devices (edge/sim: real UpdateManager, verification, chunk fetch, hash checks, slots,
 *   self-test, status, events), connected and idle; time from the first publish (retained chunks, then a
 *   desired manifest per device, as the cloud's ReleasePublisher does, 16 in flight) until every device's
 *   `installed` event arrived on `devices/+/events`; p50 / p95 per device; RSS delta / N.
 *
 * Device state goes to BENCH_DATA_DIR, by default /dev/shm when it exists: every real device fsyncs its
 * own flash, while 1,000 simulated ones would queue their fsyncs (several per install) on one host disk
 * and four libuv threads, which measures this machine's disk rather than the fleet protocol.
 *
 * Env BENCH_DEVICES (default 1000), BENCH_BROKERS (default "mosquitto,aedes"), BENCH_DATA_DIR,
 * BENCH_PROFILE (CPU profile of the simulated devices during the rollout), BENCH_CHILD_FLAGS. Writes
 * test/bench/results/fleet.json and prints a one-line summary.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt, { type MqttClient } from 'mqtt';
import { SimFleet } from '../../edge/sim/index.js';
import { generateSigningKey, type TrustedKey } from '../../shared/manifest/index.js';
import { encodePayload, signedManifestSchema, topics } from '../../shared/protocol/index.js';
import { makeRelease, trustedKeysOf, type TestRelease } from '../fixtures/edge-release.js';
import { startMosquitto } from '../helpers/mosquitto.js';
import { freePort, canConnect, sleep } from '../helpers/net.js';
import { writeBenchResult } from './common.js';
import { mapLimit } from '../../shared/util/map-limit.js';
import { percentileOfSorted } from '../../shared/util/percentile.js';

const SELF = fileURLToPath(import.meta.url);
const PUBLISH_CONCURRENCY = 16;
const CONNECT_CONCURRENCY = 50;
const STORAGE = process.env.BENCH_DATA_DIR ?? (existsSync('/dev/shm') ? '/dev/shm' : tmpdir());

const round = (x: number): number => Math.round(x * 10) / 10;

interface Broker {
  name: string;
  url: string;
  stop(): Promise<void>;
}

async function startMosquittoBroker(): Promise<Broker> {
  // No connection limit, large queues: the bench measures delivery, not the default caps.
  const m = await startMosquitto({ config: ['max_connections -1', 'max_queued_messages 100000', 'max_inflight_messages 100', 'set_tcp_nodelay true'] });
  return { name: 'mosquitto', url: m.url, stop: () => m.stop() };
}

async function startAedesBroker(): Promise<Broker> {
  const port = await freePort();
  const child: ChildProcess = spawn(process.execPath, [SELF, '--aedes-child', String(port)], { stdio: ['ignore', 'inherit', 'inherit'] });
  const deadline = Date.now() + 15_000;
  while (!(await canConnect(port))) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error('aedes child did not start');
    await sleep(100);
  }
  return {
    name: 'aedes',
    url: `mqtt://127.0.0.1:${port}`,
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

async function connectClient(url: string, clientId: string): Promise<MqttClient> {
  return mqtt.connectAsync(url, { clientId, clean: true, reconnectPeriod: 1_000, keepalive: 120 });
}

/** Retained chunks, then one desired manifest per device, 16 publishes in flight (cloud/fleet ReleasePublisher). */
async function publishRollout(pub: MqttClient, rel: TestRelease, ids: readonly string[]): Promise<void> {
  const sha = rel.manifest.artifact.sha256;
  await mapLimit(rel.chunks, PUBLISH_CONCURRENCY, (c, i) => pub.publishAsync(topics.artifactChunk(sha, i), c, { qos: 1, retain: true }));
  const payload = encodePayload(signedManifestSchema, rel.signed);
  await mapLimit(ids, PUBLISH_CONCURRENCY, (id) => pub.publishAsync(topics.desired(id), payload, { qos: 1, retain: true }));
}

async function clearRollout(pub: MqttClient, rel: TestRelease, ids: readonly string[]): Promise<void> {
  const sha = rel.manifest.artifact.sha256;
  const empty = Buffer.alloc(0);
  await mapLimit(rel.chunks, PUBLISH_CONCURRENCY, (_c, i) => pub.publishAsync(topics.artifactChunk(sha, i), empty, { qos: 1, retain: true }));
  await mapLimit(ids, PUBLISH_CONCURRENCY, (id) => pub.publishAsync(topics.desired(id), empty, { qos: 1, retain: true }));
}

interface Timing {
  totalMs: number;
  p50Ms: number;
  p95Ms: number;
}

function timing(perDevice: number[], totalMs: number): Timing {
  const s = [...perDevice].sort((a, b) => a - b);
  return { totalMs: round(totalMs), p50Ms: round(percentileOfSorted(s, 50)), p95Ms: round(percentileOfSorted(s, 95)) };
}

/** Epoch milliseconds with sub-millisecond precision, comparable across processes on one host. */
const epochNow = (): number => performance.timeOrigin + performance.now();

/**
 * The devices (or plain subscribers) run in a child process, so the parent, which publishes like the cloud
 * and watches the events, is not slowed down by their work: the same split as cloud and fleet.
 */
interface Child {
  proc: ChildProcess;
  ready: Promise<{ rss: number; heap: number }>;
  done: Promise<{ at: number[]; rejected: number }>;
  measure(): Promise<{ rss: number; heap: number; sessionsOpened: number }>;
  stop(): Promise<void>;
}

function startChild(args: string[]): Child {
  const proc = spawn(process.execPath, ['--expose-gc', ...(process.env.BENCH_CHILD_FLAGS ?? '').split(' ').filter(Boolean), SELF, '--child', ...args], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const waiters = new Map<string, (m: Record<string, unknown>) => void>();
  const once = <T>(type: string): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      waiters.set(type, (m) => resolve(m as T));
      proc.once('exit', (code) => reject(new Error(`bench child exited (${code}) before "${type}"`)));
    });
  proc.on('message', (m: Record<string, unknown>) => waiters.get(String(m.type))?.(m));
  const ready = once<{ rss: number; heap: number }>('ready');
  const done = once<{ at: number[]; rejected: number }>('done');
  // Only the baseline child sends `done`; an exit before it must not be an unhandled rejection.
  done.catch(() => undefined);
  return {
    proc,
    ready,
    done,
    measure: () => {
      const p = once<{ rss: number; heap: number; sessionsOpened: number }>('measured');
      proc.send({ type: 'measure' });
      return p;
    },
    stop: async () => {
      if (proc.exitCode !== null) return;
      const exited = new Promise((r) => proc.once('exit', r));
      proc.send({ type: 'stop' });
      await exited;
    },
  };
}

async function baseline(url: string, n: number, rel: TestRelease): Promise<Timing> {
  const prefix = `base${Date.now().toString(36)}`;
  const ids = Array.from({ length: n }, (_, i) => SimFleet.deviceId(prefix, i));
  const child = startChild(['subs', String(n), url, prefix, rel.manifest.artifact.sha256, String(rel.chunks.length), String(rel.bytes.length)]);
  await child.ready;
  const pub = await connectClient(url, 'bench-pub-base');
  const t0 = epochNow();
  await publishRollout(pub, rel, ids);
  const { at } = await child.done;
  const perDevice = at.map((x) => x - t0);
  await clearRollout(pub, rel, ids);
  await pub.endAsync();
  await child.stop();
  return timing(perDevice, Math.max(...perDevice));
}

interface SimResult extends Timing {
  connectMs: number;
  rssDeltaMiB: number;
  rssPerDeviceKiB: number;
  heapPerDeviceKiB: number;
  rejected: number;
  sessionsOpened: number;
}

async function simulate(url: string, n: number, rel: TestRelease, key: ReturnType<typeof generateSigningKey>, dataDir: string): Promise<SimResult> {
  const prefix = `sim${Date.now().toString(36)}`;
  const ids = Array.from({ length: n }, (_, i) => SimFleet.deviceId(prefix, i));
  const monitor = await connectClient(url, 'bench-monitor');
  const installedAt = new Map<string, number>();
  let rejected = 0;
  let resolveAll!: () => void;
  const all = new Promise<void>((r) => (resolveAll = r));
  monitor.on('message', (_topic, payload) => {
    const at = epochNow();
    const ev = JSON.parse(payload.toString('utf8')) as { deviceId: string; type: string; release: number | null };
    if (ev.type === 'rejected') rejected++;
    if (ev.type !== 'installed' || ev.release !== rel.manifest.release || installedAt.has(ev.deviceId)) return;
    installedAt.set(ev.deviceId, at);
    if (installedAt.size === n) resolveAll();
  });
  await monitor.subscribeAsync('apprentice/v1/devices/+/events', { qos: 1 });
  const c0 = performance.now();
  const child = startChild(['sim', String(n), url, prefix, dataDir, JSON.stringify(trustedKeysOf(key))]);
  const mem0 = await child.ready.then(() => child.measure());
  const connectMs = performance.now() - c0;
  const pub = await connectClient(url, 'bench-pub-sim');
  const t0 = epochNow();
  await publishRollout(pub, rel, ids);
  const timeout = new Promise<never>((_r, rej) => setTimeout(() => rej(new Error(`only ${installedAt.size}/${n} installed after 10 min (${rejected} rejected)`)), 600_000).unref());
  await Promise.race([all, timeout]);
  const perDevice = [...installedAt.values()].map((x) => x - t0);
  const mem1 = await child.measure();
  await child.stop();
  await clearRollout(pub, rel, ids);
  await Promise.all([pub, monitor].map((c) => c.endAsync()));
  // The child's RSS before any device exists is its baseline (Node + modules + ORT); `ready` carries it.
  const base = await child.ready;
  const rssDelta = mem1.rss - base.rss;
  return {
    ...timing(perDevice, Math.max(...perDevice)),
    connectMs: round(connectMs),
    rssDeltaMiB: round(rssDelta / 2 ** 20),
    rssPerDeviceKiB: round(rssDelta / n / 1024),
    heapPerDeviceKiB: round((mem1.heap - base.heap) / n / 1024),
    rejected,
    sessionsOpened: mem1.sessionsOpened,
  };
  void mem0;
}

/** Child: N plain subscribers (baseline) or N simulated devices; reports over IPC. */
async function child(kind: string, args: string[]): Promise<void> {
  const send = (m: Record<string, unknown>): void => void process.send!(m);
  const mem = () => {
    global.gc?.();
    const u = process.memoryUsage();
    return { rss: u.rss, heap: u.heapUsed };
  };
  if (kind === 'subs') {
    const [nS, url, prefix, sha, chunksS, bytesS] = args as [string, string, string, string, string, string];
    const n = Number(nS);
    const need = Number(chunksS);
    const total = Number(bytesS);
    const at: number[] = [];
    const clients: MqttClient[] = [];
    await mapLimit(Array.from({ length: n }, (_, i) => SimFleet.deviceId(prefix, i)), CONNECT_CONCURRENCY, async (id, i) => {
      const c = await connectClient(url, id);
      clients[i] = c;
      const got = new Set<number>();
      let bytes = 0;
      let manifest = false;
      let finished = false;
      c.on('message', (topic, payload) => {
        if (finished || payload.length === 0) return;
        if (topic === topics.desired(id)) manifest = true;
        else {
          const idx = Number(topic.slice(topic.lastIndexOf('/') + 1));
          if (!got.has(idx)) {
            got.add(idx);
            bytes += payload.length;
          }
        }
        if (manifest && got.size === need && bytes === total) {
          finished = true;
          at.push(epochNow());
          if (at.length === n) send({ type: 'done', at, rejected: 0 });
        }
      });
      await c.subscribeAsync([topics.desired(id), topics.artifactChunks(sha)], { qos: 1 });
    });
    send({ type: 'ready', ...mem() });
    process.on('message', (m: { type: string }) => {
      if (m.type === 'stop') void Promise.all(clients.map((c) => c.endAsync(true))).then(() => process.exit(0));
    });
    return;
  }
  const [nS, url, prefix, dataDir, keys] = args as [string, string, string, string, string];
  const before = mem();
  const fleet = new SimFleet({ devices: Number(nS), mqttUrl: url, dataDir, trustedKeys: JSON.parse(keys) as TrustedKey[], prefix, connectConcurrency: CONNECT_CONCURRENCY });
  await fleet.start();
  send({ type: 'ready', ...before });
  // BENCH_PROFILE=file.cpuprofile: a CPU profile of the sim child from the rollout start to 100% installed.
  const { Session } = await import('node:inspector/promises');
  const profile = process.env.BENCH_PROFILE ? new Session() : undefined;
  let measures = 0;
  process.on('message', (m: { type: string }) => {
    if (m.type === 'measure' && profile) {
      measures++;
      if (measures === 1) {
        profile.connect();
        void profile.post('Profiler.enable').then(() => profile.post('Profiler.start'));
      } else if (measures === 2) {
        void profile.post('Profiler.stop').then(async ({ profile: data }) => {
          const { writeFile } = await import('node:fs/promises');
          await writeFile(process.env.BENCH_PROFILE!, JSON.stringify(data));
        });
      }
    }
    if (m.type === 'measure') send({ type: 'measured', ...mem(), sessionsOpened: fleet.sessions.stats().opened });
    if (m.type === 'stop') void fleet.stop().then(() => process.exit(0));
  });
}

async function main(): Promise<void> {
  const n = Number(process.env.BENCH_DEVICES ?? 1000);
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`BENCH_DEVICES: expected a positive integer, got ${process.env.BENCH_DEVICES}`);
  const which = (process.env.BENCH_BROKERS ?? 'mosquitto,aedes').split(',').map((s) => s.trim());
  const key = generateSigningKey();
  // ~100 KB model (784→32→10 fp32) in 32 KiB chunks: 4 retained chunks per artifact.
  const relBase = makeRelease(key, { release: 1, seed: 11, sizes: [784, 32, 10], chunkSize: 32 * 1024 });
  const relSim = makeRelease(key, { release: 2, seed: 12, sizes: [784, 32, 10], chunkSize: 32 * 1024 });
  const results: Record<string, unknown> = {};
  const summary: string[] = [];
  for (const name of which) {
    const broker = name === 'mosquitto' ? await startMosquittoBroker() : name === 'aedes' ? await startAedesBroker() : undefined;
    if (!broker) throw new Error(`BENCH_BROKERS: unknown broker ${name}`);
    const dataDir = await mkdtemp(join(STORAGE, 'apprentice-fleet-bench-'));
    try {
      process.stderr.write(`[fleet] ${name}: baseline, ${n} subscribers…\n`);
      const base = await baseline(broker.url, n, relBase);
      process.stderr.write(`[fleet] ${name}: baseline ${base.totalMs} ms; sim, ${n} devices…\n`);
      const sim = await simulate(broker.url, n, relSim, key, dataDir);
      const ratio = Math.round((sim.totalMs / base.totalMs) * 100) / 100;
      results[name] = { baseline: base, sim, ratio, targetMet: name === 'mosquitto' ? ratio <= 2 : undefined };
      summary.push(`${name}: sim ${sim.totalMs} ms (p50 ${sim.p50Ms}, p95 ${sim.p95Ms}) vs baseline ${base.totalMs} ms = ${ratio}×, ${sim.rssPerDeviceKiB} KiB/device`);
      process.stderr.write(`[fleet] ${summary.at(-1)}\n`);
    } finally {
      await broker.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
  }
  const file = writeBenchResult('fleet', {
    devices: n,
    storage: STORAGE,
    model: { bytes: relSim.bytes.length, chunks: relSim.chunks.length, chunkSize: 32 * 1024 },
    publishConcurrency: PUBLISH_CONCURRENCY,
    connectConcurrency: CONNECT_CONCURRENCY,
    results,
  });
  console.log(`fleet N=${n}: ${summary.join('; ')} → ${file}`);
}

async function aedesChild(port: number): Promise<void> {
  const { EmbeddedBroker } = await import('../../cloud/fleet/broker.js');
  const b = await EmbeddedBroker.create({ port });
  process.once('SIGTERM', () => void b.stop().then(() => process.exit(0)));
}

if (process.argv[2] === '--child') {
  await child(process.argv[3]!, process.argv.slice(4));
} else if (process.argv[2] === '--aedes-child') {
  await aedesChild(Number(process.argv[3]));
} else {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
