/**
 * Replicas bench (issue 15 item 7): `npm run bench:replicas` (BENCH_QUICK=1: a few seconds per N).
 * For N = 1, 2, 3 `apprentice cloud` processes (cluster.enabled, one registry URL, MQTT 5 `$share`; the
 * default config otherwise: what ships), each N on a fresh throwaway PostgreSQL database and all on the same
 * private Mosquitto, under the same offered load:
 * - ingest: BENCH_DEVICES (default 20; 10 quick) simulated devices (test/helpers/outbox-device.ts: the real example batches and
 *   receipts, re-sends after a receipt timeout), each a batch of BATCH examples (784 float32 inputs, 10
 *   outputs) every SEND_EVERY_MS: 20 examples/s a device, the default per-device cap (ingest.examplesPerMinute
 *   1200), so the quota defers none: 400 examples/s offered by default. Latency = publish → receipt of each batch sent in the measured window.
 *   Examples/s = what the replicas inserted in the window (their /metrics counters). After the window the
 *   devices stop and drain their outboxes; then stored ids must equal selected ids (none lost).
 * - API: API_RPS admin GETs a second (GET /v1/devices, GET /v1/rollouts, GET /healthz in turn) to all replicas
 *   round-robin, open loop, while ingest runs; p50/p99 per endpoint.
 * - CPU in the window from /proc: each replica's process tree, the PostgreSQL backends of its database, all
 *   PostgreSQL processes (the server is shared with other users of this machine), Mosquitto, this process
 *   (devices and API client), and the machine's busy fraction; CPU ms per example per replica; the database's
 *   commits/s (pg_stat_database) and the server's durability settings.
 * Writes test/bench/results/replicas.json and prints a one-line summary.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import pg from 'pg';
import { openRegistry } from '../../cloud/registry/open.js';
import { PROTOCOL_REVISION } from '../../shared/protocol/compat.js';
import { float32ToBase64, type Example } from '../../shared/protocol/index.js';
import { sleep, waitFor } from '../helpers/net.js';
import { sharedClusterKeys, spawnCloud, waitForCloudApi, writeReplicaConfig, type CloudChild } from '../helpers/cloud-process.js';
import { mosquittoAvailable, startMosquitto, type MosquittoBroker } from '../helpers/mosquitto.js';
import { OutboxDevice, outboxDepth } from '../helpers/outbox-device.js';
import { ADMIN_URL, createThrowawayDb, postgresSkipReason } from '../helpers/pg-throwaway.js';
import { busyFraction, cpuSecondsBetween, readAllProcStats, readMachineCpu, treeTicks, type MachineCpu, type ProcStat } from '../helpers/proc-cpu.js';
import { writeBenchResult } from './common.js';
import { REST_OF_MACHINE, cpuMsPerExample, cpuRanking, latencyStats, promCounter, ratios, round, summaryLine, type RunHeadline } from './replicas-summary.js';

const QUICK = process.env.BENCH_QUICK === '1';
const DEVICES = Number(process.env.BENCH_DEVICES ?? (QUICK ? '10' : '20'));
const REPLICAS = (process.env.BENCH_REPLICAS ?? '1,2,3').split(',').map(Number);
const BATCH = 10;
const SEND_EVERY_MS = 500;
const RECEIPT_TIMEOUT_MS = 5_000;
const FEATURES = 784;
const WARMUP_MS = QUICK ? 2_000 : 5_000;
const MEASURE_MS = QUICK ? 4_000 : 20_000;
const API_RPS = 30;
const DRAIN_MS = 180_000;
const ENDPOINTS = ['/v1/devices', '/v1/rollouts', '/healthz'] as const;
const TOKEN = 'bench-replicas-token-0123456789';
const log = (m: string): void => void process.stderr.write(`[replicas] ${m}\n`);

// A pool of distinct inputs (MNIST-sized), built once; each example gets a fresh UUID, so every row is new.
const inputs = Array.from({ length: BATCH }, (_, k) => float32ToBase64(Float32Array.from({ length: FEATURES }, (_, j) => ((k * 31 + j * 7) % 255) / 255)));
const example = (id: string, k: number): Example => ({ id, input: inputs[k % inputs.length]!, output: [0.05, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.15, 0.15], model: null, release: null, at: new Date().toISOString(), reason: k % 2 ? 'low_margin' : 'low_confidence' });

interface Replica {
  id: string;
  apiUrl: string;
  proc: CloudChild;
}

const auth = { authorization: `Bearer ${TOKEN}` };
async function inserted(r: Replica): Promise<number> {
  const res = await fetch(`${r.apiUrl}/metrics`, { headers: auth });
  if (!res.ok) throw new Error(`${r.id} /metrics: ${res.status}`);
  return promCounter(await res.text(), 'apprentice_cloud_ingest_examples_total', { result: 'inserted' });
}

/** Runs one query on the test server's maintenance database. */
async function adminQuery<R extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<R[]> {
  const c = new pg.Client({ connectionString: ADMIN_URL });
  await c.connect();
  try {
    return (await c.query<R>(text, values)).rows;
  } finally {
    await c.end();
  }
}

/** pids of the PostgreSQL backends serving database `name`, and its committed transactions so far (pg_stat_database). */
async function dbStats(name: string): Promise<{ backends: number[]; commits: number }> {
  const [backends, stat] = await Promise.all([
    adminQuery<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = $1', [name]),
    adminQuery<{ xact_commit: string }>('SELECT xact_commit FROM pg_stat_database WHERE datname = $1', [name]),
  ]);
  return { backends: backends.map((r) => r.pid), commits: Number(stat[0]?.xact_commit ?? NaN) };
}

interface Snapshot {
  at: number;
  procs: ProcStat[];
  machine: MachineCpu;
  self: NodeJS.CpuUsage;
  inserted: number[];
  backends: number[];
  commits: number;
}

async function snapshot(replicas: Replica[], db: string): Promise<Snapshot> {
  const [ins, { backends, commits }] = await Promise.all([Promise.all(replicas.map(inserted)), dbStats(db)]);
  return { at: performance.now(), procs: readAllProcStats(), machine: readMachineCpu(), self: process.cpuUsage(), inserted: ins, backends, commits };
}

/** Admin GETs at API_RPS, open loop, to the replicas in turn; latencies of requests started in [from, to). */
function apiClient(replicas: Replica[], from: () => number, to: () => number) {
  const lat = new Map<string, number[]>(ENDPOINTS.map((e) => [e, []]));
  let failed = 0;
  let i = 0;
  const timer = setInterval(() => {
    const path = ENDPOINTS[i % ENDPOINTS.length]!;
    const r = replicas[Math.floor(i / ENDPOINTS.length) % replicas.length]!;
    i++;
    const t = performance.now();
    void fetch(`${r.apiUrl}${path}`, { headers: auth })
      .then(async (res) => {
        await res.arrayBuffer();
        if (!res.ok) throw new Error(String(res.status));
        if (t >= from() && t < to()) lat.get(path)!.push(performance.now() - t);
      })
      .catch(() => failed++);
  }, 1000 / API_RPS);
  return { lat, failed: () => failed, stop: () => clearInterval(timer) };
}

async function runN(n: number, root: string, shared: string, broker: MosquittoBroker) {
  const tdb = await createThrowawayDb();
  const reg = await openRegistry({ url: tdb.url });
  const replicas: Replica[] = [];
  const devices: OutboxDevice[] = [];
  let resender: NodeJS.Timeout | undefined;
  try {
    const ids = Array.from({ length: DEVICES }, (_, i) => `n${n}-d${i}`);
    const at = new Date().toISOString();
    await reg.q.insert(reg.t.devices).values(ids.map((id) => ({ id, groups: ['bench'], credentialHash: 'x', online: true, lastSeen: at, protocolVersion: PROTOCOL_REVISION, capabilities: ['receipts'] })));
    const dir = join(root, `n${n}`);
    for (let k = 1; k <= n; k++) {
      // The same replica ids for every N: r1 of N=2 takes over r1's MQTT session of N=1 (no stale session left in the share group).
      const { file, apiUrl } = await writeReplicaConfig(dir, `r${k}`, { registryUrl: tdb.url, brokerUrl: broker.url, sharedDir: shared, adminToken: TOKEN, mqtt: { protocolVersion: 5 } });
      replicas.push({ id: `r${k}`, apiUrl, proc: spawnCloud(file) });
    }
    for (const r of replicas) await waitForCloudApi(r.proc, r.apiUrl, 120_000);
    log(`N=${n}: ${n} replica(s) up`);

    let windowStart = Infinity;
    let windowEnd = Infinity;
    const ingestLat: number[] = [];
    const onReceipt = (ms: number, sentAt: number) => void (sentAt >= windowStart && sentAt < windowEnd && ingestLat.push(ms));
    for (const id of ids) devices.push(await OutboxDevice.connect(broker.url, id, { batch: BATCH, sendEveryMs: SEND_EVERY_MS, receiptTimeoutMs: RECEIPT_TIMEOUT_MS, example, onReceipt }));
    const api = apiClient(replicas, () => windowStart, () => windowEnd);
    devices.forEach((d, k) => setTimeout(() => d.start(), (k * SEND_EVERY_MS) / devices.length)); // spread over the period
    resender = setInterval(() => devices.forEach((d) => d.resendOverdue()), 250);

    await sleep(WARMUP_MS);
    const loadBefore = loadavg();
    const a = await snapshot(replicas, tdb.name);
    // This process's event-loop delay in the window: it inflates every latency measured here, so it is reported beside them.
    // The histogram records the interval between 10 ms sampling timers: 10 ms is no delay.
    const loop = monitorEventLoopDelay({ resolution: 10 });
    loop.enable();
    windowStart = performance.now();
    await sleep(MEASURE_MS);
    windowEnd = performance.now();
    loop.disable();
    const b = await snapshot(replicas, tdb.name);
    const loadAfter = loadavg();
    const windowSeconds = (b.at - a.at) / 1000;

    devices.forEach((d) => d.stop());
    // Drained = every example has its receipt. A backlog that does not drain in DRAIN_MS is recorded (drained false; its rows count in `lost`), not thrown.
    const drainFrom = performance.now();
    const drained = await waitFor(() => outboxDepth(devices) === 0, DRAIN_MS, { intervalMs: 200 }).then(() => true, () => false);
    const drainSeconds = round((performance.now() - drainFrom) / 1000, 1);
    api.stop();
    clearInterval(resender);

    const selected = new Set(devices.flatMap((d) => [...d.selected]));
    const stored = (await reg.q.select({ id: reg.t.examples.id }).from(reg.t.examples)).map((r) => r.id);
    const storedSet = new Set(stored);
    const lost = [...selected].filter((x) => !storedSet.has(x)).length;
    const extra = stored.filter((x) => !selected.has(x)).length;
    const roles = await Promise.all(replicas.map(async (r) => ((await (await fetch(`${r.apiUrl}/healthz`)).json()) as { role?: string }).role ?? 'unknown'));

    const cpuOf = (pids: number[]) => cpuSecondsBetween(treeTicks(a.procs, pids), treeTicks(b.procs, pids));
    const perReplica = replicas.map((r, k) => {
      const cpuSeconds = cpuOf([r.proc.child.pid!]);
      const ins = b.inserted[k]! - a.inserted[k]!;
      return { id: r.id, role: roles[k], cpuSeconds: round(cpuSeconds), examplesInserted: ins, cpuMsPerExample: cpuMsPerExample(cpuSeconds, ins), coresUsed: round(cpuSeconds / windowSeconds) };
    });
    const storedInWindow = perReplica.reduce((s, r) => s + r.examplesInserted, 0);
    const cloudCpu = perReplica.reduce((s, r) => s + r.cpuSeconds, 0);
    const pgBackends = cpuSecondsBetween(new Map(a.procs.filter((p) => a.backends.includes(p.pid)).map((p) => [p.pid, p.cpuTicks])), new Map(b.procs.filter((p) => b.backends.includes(p.pid)).map((p) => [p.pid, p.cpuTicks])));
    const allPg = (s: Snapshot) => new Map(s.procs.filter((p) => p.comm === 'postgres').map((p) => [p.pid, p.cpuTicks]));
    const pgAll = cpuSecondsBetween(allPg(a), allPg(b));
    const mosquitto = cpuOf([broker.pid!]);
    const self = (b.self.user + b.self.system - a.self.user - a.self.system) / 1e6;
    const ours = { ...Object.fromEntries(perReplica.map((r) => [`cloud ${r.id}`, r.cpuSeconds])), 'postgres (backends of this database)': pgBackends, 'postgres (server processes, other databases)': pgAll - pgBackends, mosquitto, 'bench (devices + API client)': self };
    const machineBusy = busyFraction(a.machine, b.machine);
    // What the machine did besides: other users' processes (the machine is shared), the kernel, anything unlisted.
    const rest = machineBusy * windowSeconds * cpus().length - Object.values(ours).reduce((s, x) => s + x, 0);
    const ranking = cpuRanking({ ...ours, [REST_OF_MACHINE]: rest }, windowSeconds, cpus().length);
    const apiStats = Object.fromEntries([...api.lat].map(([p, xs]) => [p, latencyStats(xs)]));
    const allApi = latencyStats([...api.lat.values()].flat());
    const run = {
      replicas: n,
      roles: Object.fromEntries(replicas.map((r, k) => [r.id, roles[k]])),
      windowSeconds: round(windowSeconds),
      loadavgBefore: loadBefore,
      loadavgAfter: loadAfter,
      ingest: {
        offeredPerSecond: (DEVICES * BATCH * 1000) / SEND_EVERY_MS,
        storedPerSecond: round(storedInWindow / windowSeconds, 1),
        storedInWindow,
        latencyMs: latencyStats(ingestLat),
        drained,
        drainSeconds,
        check: { selected: selected.size, stored: stored.length, lost, extra, resends: devices.reduce((s, d) => s + d.resends, 0), unexpectedReceipts: devices.reduce((s, d) => s + d.unexpected.length, 0) },
      },
      api: { perEndpoint: apiStats, all: allApi, failed: api.failed() },
      cpu: {
        perReplica,
        cloudTotalSeconds: round(cloudCpu),
        cloudMsPerExample: cpuMsPerExample(cloudCpu, storedInWindow),
        postgresBackendsOfThisDbSeconds: round(pgBackends),
        postgresBackendsMsPerExample: cpuMsPerExample(pgBackends, storedInWindow),
        postgresAllProcessesSeconds: round(pgAll),
        // pg_stat_database counts every transaction of the database (the replicas' reads too); PostgreSQL flushes these counters about once a second.
        postgresCommitsPerSecond: round((b.commits - a.commits) / windowSeconds, 1),
        mosquittoSeconds: round(mosquitto),
        benchProcessSeconds: round(self),
        benchEventLoopDelayMs: { p50: round(loop.percentile(50) / 1e6), p99: round(loop.percentile(99) / 1e6), max: round(loop.max / 1e6) },
        machineBusyFraction: round(machineBusy, 3),
        ranking,
      },
    };
    log(`N=${n}: ${run.ingest.storedPerSecond} ex/s, ingest p99 ${run.ingest.latencyMs.p99} ms, API p99 ${allApi.p99} ms, ${lost} lost; CPU ${ranking.map((x) => `${x.name} ${x.seconds}s`).join(', ')}; machine ${run.cpu.machineBusyFraction}`);
    return run;
  } finally {
    clearInterval(resender);
    for (const d of devices) await d.end().catch(() => undefined);
    // SIGTERM: each replica disconnects from the broker after its in-flight work, as in a rolling stop.
    for (const r of replicas) if (r.proc.alive()) r.proc.child.kill('SIGTERM');
    await waitFor(() => replicas.every((r) => !r.proc.alive()), 20_000, { intervalMs: 100 }).catch(() => replicas.forEach((r) => r.proc.child.kill('SIGKILL')));
    await reg.close();
    await tdb.drop();
  }
}

async function main(): Promise<void> {
  if (await postgresSkipReason('the replicas bench')) process.exit(1);
  if (!mosquittoAvailable()) throw new Error('the replicas bench needs mosquitto');
  const root = mkdtempSync(join(tmpdir(), 'apprentice-bench-replicas-'));
  const loadBefore = loadavg();
  const broker = await startMosquitto();
  const postgresSettings = Object.fromEntries(
    (await adminQuery<{ name: string; setting: string }>("SELECT name, setting FROM pg_settings WHERE name IN ('server_version', 'fsync', 'synchronous_commit', 'shared_buffers', 'max_connections')")).map((r) => [r.name, r.setting]),
  );
  const runs: Awaited<ReturnType<typeof runN>>[] = [];
  try {
    const shared = sharedClusterKeys(root);
    for (const n of REPLICAS) runs.push(await runN(n, root, shared, broker));
  } finally {
    await broker.stop();
    rmSync(root, { recursive: true, force: true });
  }
  const headline = (r: (typeof runs)[number]): RunHeadline => ({
    replicas: r.replicas,
    storedPerSecond: r.ingest.storedPerSecond,
    ingestP99Ms: r.ingest.latencyMs.p99,
    apiP99Ms: r.api.all.p99,
    cloudCpuMsPerExample: r.cpu.cloudMsPerExample,
    lost: r.ingest.check.lost,
    machineBusy: r.cpu.machineBusyFraction,
    topCpu: r.cpu.ranking.find((x) => x.name !== REST_OF_MACHINE)?.name ?? 'none',
    restOfMachineShare: r.cpu.ranking.find((x) => x.name === REST_OF_MACHINE)?.shareOfMachine ?? NaN,
  });
  const base = runs.find((r) => r.replicas === 1);
  const pick = (h: RunHeadline) => ({ storedPerSecond: h.storedPerSecond, ingestP99Ms: h.ingestP99Ms, apiP99Ms: h.apiP99Ms, cloudCpuMsPerExample: h.cloudCpuMsPerExample });
  const file = writeBenchResult(QUICK ? 'replicas-quick' : 'replicas', {
    quick: QUICK,
    sharedMachine: `2 cores shared with other engineers' test runs: load average ${loadBefore.map((x) => x.toFixed(2)).join(' ')} before the bench; figures move with that load`,
    loadavgBefore: loadBefore,
    loadavgAfter: loadavg(),
    config: { devices: DEVICES, batch: BATCH, sendEveryMs: SEND_EVERY_MS, perDeviceExamplesPerSecond: (BATCH * 1000) / SEND_EVERY_MS, inputFloats: FEATURES, receiptTimeoutMs: RECEIPT_TIMEOUT_MS, warmupMs: WARMUP_MS, measureMs: MEASURE_MS, apiRps: API_RPS, endpoints: ENDPOINTS, cloudConfig: 'defaults + cluster.enabled, registry.url (one PostgreSQL 15 database per N), mqtt.protocolVersion 5 with sharedSubscriptions (one Mosquitto for all N)' },
    postgresSettings,
    runs,
    ratiosVsOneReplica: base ? runs.map((r) => ({ replicas: r.replicas, ...ratios(pick(headline(r)), pick(headline(base))) })) : [],
    scalingTarget: 'none: N processes on 2 shared cores cannot show scaling; read what saturates from cpu.ranking and cpu.machineBusyFraction',
  });
  console.log(summaryLine(runs.map(headline), file));
  if (runs.some((r) => r.ingest.check.lost > 0 || r.ingest.check.extra > 0)) process.exit(1);
}

await main();
