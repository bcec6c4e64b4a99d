/**
 * Console data bench (issue 12): what the telemetry history costs to write, and how fast the device list
 * and the fleet summary answer, at 10,000 devices with full history.
 *
 *   npm run bench:console [-- --devices 10000 --minutes 4 --iterations 200]
 *
 * Writes test/bench/results/console-data.json.
 *
 * 1. Setup, on disk (synchronous=FULL, as the cloud runs): N devices in 10 groups over 3 releases (90%
 *    online, a few degraded / dropping / trust_stale / rolled back), one live rollout over every device
 *    (1% failed, 0.5% quarantined), 20 events per device, and full telemetry history: 1,440 one-minute
 *    + 720 one-hour buckets per device (2,160 rows, the retention cap).
 * 2. Write cost: `--minutes` of a 30 s telemetry fleet (N/30 telemetry per second) through the real
 *    DeviceStateWriter, one flush per 250 ms of fleet time (as ingest runs it), without and with the
 *    TelemetryHistory sink, on that database. CPU per telemetry and per flush, and the share of one core
 *    the history adds at N/30 telemetry per second.
 * 3. Reads: `queryDevices` (first page, each tile's filter, a group, a release, a text search, a deep
 *    cursor) and `fleetSummary`, p50/p99 over `--iterations` calls each; the first call of each after the
 *    registry was reopened (SQLite page cache empty; the OS file cache is not dropped) is reported apart.
 * 4. Retention: one pass after a minute of fleet time (deletes one 1-minute bucket per device).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeviceStateWriter, type DeviceStateOp } from '../../cloud/fleet/device-state-writer.js';
import { fleetSummary, queryDevices, type DeviceQuery } from '../../cloud/fleet/device-query.js';
import { pruneTelemetryHistory, TelemetryHistory } from '../../cloud/fleet/telemetry-history.js';
import { Registry } from '../../cloud/registry/db.js';
import type { Telemetry } from '../../shared/protocol/index.js';
import { percentileOfSorted } from '../../shared/util/percentile.js';
import { writeBenchResult } from './common.js';
import { id, setup, T0 } from './console-fleet.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}
const N = arg('devices', 10_000);
const MINUTES = arg('minutes', 4);
const ITERATIONS = arg('iterations', 200);
/** `--history 0` skips the history fill (a quick profile of the reads; not for results). */
const HISTORY = arg('history', 1) !== 0;
const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;
const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
function telemetry(i: number, at: string, tick: number): Telemetry {
  return {
    v: 1, deviceId: id(i), at, model: 'digits', release: 1 + (i % 3), uptimeSeconds: 1000 + tick * 30, requests: 1000 + tick * 40, errors: 0,
    latencyMs: { p50: 1.5, p95: 4.2 }, rssBytes: 50_000_000 + (tick % 10) * 1000, outbox: { depth: tick % 4, bytes: 0, dropped: 0, evicted: 0, selected: 0, published: 0 }, health: 'ok',
  };
}

/** `MINUTES` of fleet time at one telemetry per device per 30 s, one flush per 250 ms of fleet time. */
async function writePhase(reg: Registry, withHistory: boolean, startMs: number) {
  const writer = new DeviceStateWriter({ registry: reg, flushMs: 3_600_000, maxQueued: 1_000_000 });
  if (withHistory) writer.addSink(new TelemetryHistory().sink);
  const perSecond = N / 30;
  const flushes = MINUTES * 60 * 4;
  const perFlush = perSecond / 4;
  const flushMs: number[] = [];
  const flushCpu: number[] = [];
  let sent = 0;
  const c0 = cpuMs();
  const w0 = performance.now();
  for (let f = 0; f < flushes; f++) {
    const atMs = startMs + f * 250;
    const at = new Date(atMs).toISOString();
    const upto = Math.round((f + 1) * perFlush);
    for (; sent < upto; sent++) {
      const i = sent % N;
      const op: DeviceStateOp = { kind: 'telemetry', deviceId: id(i), telemetry: telemetry(i, at, Math.floor(sent / N)), lastSeen: at };
      writer.push(op);
    }
    const c = cpuMs();
    const t = performance.now();
    if (!(await writer.flush())) throw new Error('flush failed');
    flushMs.push(performance.now() - t);
    flushCpu.push(cpuMs() - c);
  }
  await writer.stop();
  const wall = (performance.now() - w0) / 1000;
  const cpu = (cpuMs() - c0) / 1000;
  flushMs.sort((a, b) => a - b);
  return {
    withHistory,
    fleetSeconds: MINUTES * 60,
    telemetry: sent,
    flushes,
    opsPerFlush: round(perFlush, 1),
    wallSeconds: round(wall, 2),
    cpuSeconds: round(cpu, 2),
    cpuMsPerTelemetry: round((cpu * 1000) / sent, 4),
    flushMsP50: round(percentileOfSorted(flushMs, 50), 2),
    flushMsP99: round(percentileOfSorted(flushMs, 99), 2),
    /** Share of one core this path needs at N/30 telemetry per second (CPU of this process; fsync waits not included). */
    coreShareAtFleetRate: round(((cpu * 1000) / sent) * perSecond / 1000, 4),
    /** Wall time per fleet second: below 1 means the path keeps up (fsync included). */
    wallPerFleetSecond: round(wall / (MINUTES * 60), 4),
  };
}

async function readPhase(reg: Registry) {
  const now = new Date(T0 + 60_000);
  const queries: [string, DeviceQuery][] = [
    ['first page (100)', { limit: 100, now }],
    ['state=online', { state: 'online', limit: 100, now }],
    ['state=offline', { state: 'offline', limit: 100, now }],
    ['state=attention', { state: 'attention', limit: 100, now }],
    ['group=group-3', { group: 'group-3', limit: 100, now }],
    ['release=2', { release: 2, limit: 100, now }],
    ['q=0042', { q: '0042', limit: 100, now }],
    ['cursor at 90%', { limit: 100, cursor: id(Math.floor(N * 0.9)), now }],
    ['group=eu&state=attention', { group: 'eu', state: 'attention', limit: 100, now }],
  ];
  const out: Record<string, { p50Ms: number; p99Ms: number; maxMs: number; firstAfterOpenMs: number; rows: number; total: number }> = {};
  const time = async (name: string, fn: () => Promise<{ rows: number; total: number }>, first: number) => {
    const ms: number[] = [];
    let last = { rows: 0, total: 0 };
    for (let k = 0; k < ITERATIONS; k++) {
      const t = performance.now();
      last = await fn();
      ms.push(performance.now() - t);
    }
    ms.sort((a, b) => a - b);
    out[name] = { p50Ms: round(percentileOfSorted(ms, 50), 2), p99Ms: round(percentileOfSorted(ms, 99), 2), maxMs: round(ms[ms.length - 1]!, 2), firstAfterOpenMs: round(first, 2), ...last };
  };
  for (const [name, q] of queries) {
    const t = performance.now();
    await queryDevices(reg, q);
    const first = performance.now() - t;
    await time(`queryDevices ${name}`, async () => {
      const p = await queryDevices(reg, q);
      return { rows: p.devices.length, total: p.total };
    }, first);
  }
  const t = performance.now();
  await fleetSummary(reg, { now });
  const first = performance.now() - t;
  await time('fleetSummary', async () => {
    const s = await fleetSummary(reg, { now });
    return { rows: s.releases.length, total: s.total };
  }, first);
  return out;
}

const dir = process.env.CONSOLE_BENCH_DIR ?? mkdtempSync(join(tmpdir(), 'console-bench-'));
const path = join(dir, 'registry.db');
try {
  const loadBefore = loadavg();
  process.stderr.write(`console-data bench: ${N} devices, full history, on ${path}\n`);
  const built = setup(path, N, HISTORY);
  process.stderr.write(`setup: ${built.historyRows} history rows, ${(built.bytes / 2 ** 30).toFixed(2)} GiB in ${built.seconds} s\n`);

  // Reads first, on a freshly opened registry (empty SQLite page cache).
  let reg = Registry.open(path);
  const reads = await readPhase(reg);
  reg.dispose();

  reg = Registry.open(path);
  const baseline = await writePhase(reg, false, T0 + 1000);
  const history = await writePhase(reg, true, T0 + 1000 + MINUTES * 60_000);
  const added = round(history.cpuMsPerTelemetry - baseline.cpuMsPerTelemetry, 4);
  const rt0 = performance.now();
  const pruned = await pruneTelemetryHistory(reg, new Date(T0 + 2 * MINUTES * 60_000 + 61_000), 20_000);
  const retentionMs = round(performance.now() - rt0, 1);
  reg.dispose();

  const result = {
    // The 1-min load average was above 1 when the timed part began (this bench's own set-up counts in it; see loadavgBefore).
    loadedMachine: (loadBefore[0] ?? 0) > 1,
    loadavgBefore: loadBefore,
    loadavgAfter: loadavg(),
    config: { devices: N, telemetryEverySeconds: 30, telemetryPerSecond: round(N / 30, 1), writerFlushMs: 250, fleetMinutesPerPhase: MINUTES, iterations: ITERATIONS, synchronous: 'FULL', disk: 'real disk (tmpdir), not tmpfs' },
    setup: { ...built, rowsPerDevice: round(built.historyRows / N, 1), eventsPerDevice: 20 },
    write: { baseline, history, historyCpuMsPerTelemetry: added, historyCoreShareAtFleetRate: round(history.coreShareAtFleetRate - baseline.coreShareAtFleetRate, 4) },
    reads,
    retention: { deleted: pruned, ms: retentionMs, rowsPerStatement: 20_000 },
  };
  const file = writeBenchResult('console-data', result);
  const worst = Object.entries(reads).filter(([k]) => k.startsWith('queryDevices')).reduce((a, b) => (b[1].p99Ms > a[1].p99Ms ? b : a));
  process.stdout.write(
    `console-data (${N} devices, ${built.historyRows} history rows, loadavg ${loadBefore[0]}): history adds ${added} ms CPU per telemetry ` +
      `(${round(result.write.historyCoreShareAtFleetRate * 100, 1)}% of a core at ${round(N / 30, 0)}/s; flush p99 ${baseline.flushMsP99} → ${history.flushMsP99} ms); ` +
      `fleetSummary p50/p99 ${reads.fleetSummary!.p50Ms}/${reads.fleetSummary!.p99Ms} ms; worst queryDevices p99 ${worst[1].p99Ms} ms (${worst[0]}) → ${file}\n`,
  );
} finally {
  if (!process.env.CONSOLE_BENCH_DIR) rmSync(dir, { recursive: true, force: true });
}
