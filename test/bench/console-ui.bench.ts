/**
 * Console page bench (issue 12): server time of the overview page and the device list at 10,000 devices
 * with full telemetry history (console-fleet.ts), on a freshly opened registry (no pre-warmed SQLite page
 * cache; the OS file cache is not dropped), with SSE clients watching the fleet-wide rollout (the live hub
 * renders its progress, counts and 200 devices, every second) and ingest running (N/30 telemetry per second through
 * the real DeviceStateWriter with the telemetry-history sink, one flush per 250 ms), all in this process as
 * in `apprentice cloud`. Each request goes through the whole app (session check, API calls in process,
 * JSX render) with app.request (no socket).
 *
 *   npm run bench:console-ui [-- --devices 10000 --iterations 100 --sse 5]
 *
 * Writes test/bench/results/console-ui.json.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { desc, eq } from 'drizzle-orm';
import { createCloudApi } from '../../cloud/api/app.js';
import type { RolloutsService } from '../../cloud/api/types.js';
import { fleetSummary } from '../../cloud/fleet/device-query.js';
import { DeviceStateWriter } from '../../cloud/fleet/device-state-writer.js';
import { TelemetryHistory } from '../../cloud/fleet/telemetry-history.js';
import { KeyStore } from '../../cloud/keys/store.js';
import { Registry } from '../../cloud/registry/db.js';
import { rollouts } from '../../cloud/registry/schema.js';
import { percentileOfSorted } from '../../shared/util/percentile.js';
import { writeBenchResult } from './common.js';
import { id, setup } from './console-fleet.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}
const N = arg('devices', 10_000);
const ITERATIONS = arg('iterations', 100);
const SSE = arg('sse', 5);
const TOKEN = 'bench-admin-token-0123456789';
const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);

/** Read-only rollouts over the registry: the pages measured here only list and read. */
function readOnlyRollouts(reg: Registry): RolloutsService {
  const no = () => Promise.reject(new Error('read-only in this bench'));
  return {
    create: no, abort: no, rollback: no, pause: no, resume: no,
    get: (rid) => reg.db.select().from(rollouts).where(eq(rollouts.id, rid)).get(),
    list: () => reg.db.select().from(rollouts).orderBy(desc(rollouts.createdAt)).all(),
  };
}

const dir = mkdtempSync(join(tmpdir(), 'console-ui-bench-'));
const path = join(dir, 'registry.db');
try {
  process.stderr.write(`console-ui bench: ${N} devices with full history on ${path}\n`);
  const built = setup(path, N);
  process.stderr.write(`setup: ${built.historyRows} history rows in ${built.seconds} s\n`);
  const loadBefore = loadavg();
  const reg = Registry.open(path);
  mkdirSync(join(dir, 'keys'));
  const app = createCloudApi({
    registry: reg,
    keys: KeyStore.open({ dir: join(dir, 'keys') }),
    adminToken: TOKEN,
    broker: { publicUrl: 'mqtt://127.0.0.1:1883' },
    rounds: { start: () => Promise.reject(new Error('read-only in this bench')) },
    rollouts: readOnlyRollouts(reg),
    artifactsDir: dir,
  });
  const login = await app.request('/ui/login', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `token=${TOKEN}&who=bench` });
  const cookie = login.headers.get('set-cookie')!.split(';')[0]!;
  const get = async (p: string): Promise<number> => {
    const t = performance.now();
    const r = await app.request(p, { headers: { cookie, accept: 'text/html' } });
    await r.text();
    if (r.status !== 200) throw new Error(`${p}: ${r.status}`);
    return performance.now() - t;
  };

  // First request of each page on the cold registry, before anything else touched it.
  const pages = ['/ui/', '/ui/devices', '/ui/devices?state=attention', '/ui/devices?q=0042', `/ui/devices?cursor=${id(Math.floor(N * 0.9))}`];
  const first: Record<string, number> = {};
  for (const p of pages) first[p] = round(await get(p));

  // SSE clients on the rollout over every device.
  const streams: ReadableStreamDefaultReader<Uint8Array>[] = [];
  let sseBytes = 0;
  for (let k = 0; k < SSE; k++) {
    const r = await app.request('/ui/rollouts/ro-1/live', { headers: { cookie } });
    const reader = r.body!.getReader();
    streams.push(reader);
    void (async () => {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        sseBytes += value.byteLength;
      }
    })();
  }
  // Ingest: N/30 telemetry per second, flushed every 250 ms with the history sink.
  const writer = new DeviceStateWriter({ registry: reg, flushMs: 250 });
  writer.addSink(new TelemetryHistory().sink);
  let sent = 0;
  const ingest = setInterval(() => {
    const at = new Date().toISOString();
    for (let k = 0; k < N / 30 / 4; k++, sent++) {
      const i = sent % N;
      writer.push({ kind: 'telemetry', deviceId: id(i), lastSeen: at, telemetry: { v: 1, deviceId: id(i), at, model: 'digits', release: 1 + (i % 3), uptimeSeconds: 100 + sent, requests: sent, errors: 0, latencyMs: { p50: 1.5, p95: 4 }, rssBytes: 5e7, outbox: { depth: 0, bytes: 0, dropped: 0, evicted: 0, selected: 0, published: 0 }, health: 'ok' } });
    }
  }, 250);

  const results: Record<string, { p50Ms: number; p99Ms: number; maxMs: number; firstMs: number }> = {};
  for (const p of pages) {
    const ms: number[] = [];
    for (let k = 0; k < ITERATIONS; k++) ms.push(await get(p));
    ms.sort((a, b) => a - b);
    results[p] = { p50Ms: round(percentileOfSorted(ms, 50)), p99Ms: round(percentileOfSorted(ms, 99)), maxMs: round(ms.at(-1)!), firstMs: first[p]! };
  }
  // The overview shares one fleet summary for 2 s (cloud/ui/registry-data.ts): its pages above mostly hit
  // that cache. What a miss costs, measured directly under the same load (one pass over every device):
  const miss: number[] = [];
  for (let k = 0; k < 20; k++) {
    const t = performance.now();
    await fleetSummary(reg);
    miss.push(performance.now() - t);
  }
  miss.sort((a, b) => a - b);
  const summaryUncached = { p50Ms: round(percentileOfSorted(miss, 50)), p99Ms: round(percentileOfSorted(miss, 99)), maxMs: round(miss.at(-1)!), iterations: miss.length };
  clearInterval(ingest);
  for (const s of streams) await s.cancel();
  writer.stop();
  reg.dispose();

  const result = {
    // The 1-min load average was above 1 when the timed part began (this bench's own set-up counts in it; see loadavgBefore).
    loadedMachine: (loadBefore[0] ?? 0) > 1,
    loadavgBefore: loadBefore,
    loadavgAfter: loadavg(),
    config: { devices: N, historyRows: built.historyRows, iterations: ITERATIONS, sseClients: SSE, sseBytesReceived: sseBytes, ingestTelemetryPerSecond: round(N / 30, 1), telemetryIngested: sent, synchronous: 'FULL', disk: 'real disk (tmpdir)', targetP99Ms: 100 },
    pages: results,
    /** fleetSummary() without the console's 2 s cache: the cost of the overview's one miss per 2 s. */
    summaryUncached,
  };
  const file = writeBenchResult('console-ui', result);
  const o = results['/ui/']!;
  const l = results['/ui/devices']!;
  process.stdout.write(`console-ui (${N} devices, ${SSE} SSE clients, ingest ${round(N / 30, 0)}/s, loadavg ${loadBefore[0]}): overview p50/p99 ${o.p50Ms}/${o.p99Ms} ms, device list ${l.p50Ms}/${l.p99Ms} ms, uncached summary p99 ${summaryUncached.p99Ms} ms → ${file}\n`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
