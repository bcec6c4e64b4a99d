/**
 * Edge bench of the shipped default (issue 9, items 5, 6 and 11), the second half of `npm run bench:edge`:
 *
 * 1. `selectionWrite`: predict latency with hard-example selection at its caps (caps at their schema
 *    maximum, 100,000/min and no hourly cap, audit rate 1 so every example qualifies, no de-duplication), the outbox
 *    written in the request (`direct`: one synchronous=FULL transaction per selected example, what the
 *    daemon did before) versus queued for the OutboxWriter (`writer`: batched commits, the daemon now).
 *    In-process API, real SQLite file on disk, real ORT, the real release below.
 * 2. `shippedDefault`: the real daemon process as the systemd unit runs it (its Environment= lines,
 *    NODE_OPTIONS included), default config (selection on), serving the int8 `mlp:64` release of a real
 *    round (test/bench/real-release.ts), installed over MQTT. After a warm-up: GET /healthz load, then
 *    16 connections of single-example JSON POST /v1/predict for 60 s, RssAnon/VmRSS sampled every 100 ms,
 *    VmHWM read at the end. Budget: RssAnon ≤ 64 MB, VmHWM ≤ 128 MB, predict ≥ 20% of the healthz rate,
 *    0 non-2xx.
 *
 * Options: --duration-ms 60000 --warmup-ms 5000 --healthz-ms 10000 --selection-ms 10000 --only selection,daemon.
 * Merges its sections into test/bench/results/edge.json (a partial run with --only prints only).
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import { createLocalApi } from '../../edge/api/app.js';
import { startLocalServer } from '../../edge/api/server.js';
import { Outbox, OutboxWriter, buildExample } from '../../edge/outbox/index.js';
import { ModelHost } from '../../edge/runtime/host.js';
import { createSelector } from '../../edge/selection/index.js';
import { loadDataset } from '../../shared/data/index.js';
import { procMemory, sampleMemory, startDaemonWithRelease } from './daemon-process.js';
import { round, runLoad, type LoadResult } from './http-load.js';
import { realRoundRelease, type RealRelease } from './real-release.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
};
const onlyArg = process.argv.indexOf('--only');
const only = onlyArg >= 0 ? new Set(process.argv[onlyArg + 1]!.split(',')) : undefined;
const want = (n: string) => !only || only.has(n);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const CONNECTIONS = 16;

/** Single-example JSON bodies of real MNIST test digits, raw pixels (the manifest scales them). */
async function digitBodies(n = 64): Promise<string[]> {
  const ds = await loadDataset('mnist:test', { limit: n, shuffleSeed: 5 });
  const size = ds.features.length / ds.count;
  return Array.from({ length: ds.count }, (_, i) => JSON.stringify({ input: Array.from(ds.features.subarray(i * size, (i + 1) * size), (v) => Math.round(v * 255)) }));
}

async function selectionWrite(rel: RealRelease, bodies: string[], durationMs: number): Promise<Record<string, unknown>> {
  const dir = await mkdtemp(join(tmpdir(), 'apprentice-bench-sel-'));
  const modelPath = join(dir, 'model.onnx');
  await writeFile(modelPath, rel.bytes);
  const host = new ModelHost();
  await host.activate(modelPath, rel.signed.manifest);
  const out: Record<string, unknown> = {
    setup: 'selection at its caps: caps.perMinute 100000 (schema maximum), perHour null, audit.rate 1 (every example qualifies), dedupe off; outbox on a disk file, synchronous=FULL; writer defaults (flushMs 100, batchRows 64)',
  };
  try {
    for (const mode of ['direct', 'writer'] as const) {
      const outbox = await Outbox.create({ path: join(dir, `${mode}.db`), maxRows: 10_000, maxBytes: 64 << 20 });
      const writer = new OutboxWriter({ outbox });
      const selector = createSelector({ audit: { rate: 1 }, caps: { perMinute: 100_000, perHour: null }, dedupe: { enabled: false } });
      const app = createLocalApi({
        host,
        metrics: new Registry(),
        feedback: () => ({ stored: false }),
        batching: false,
        onPrediction: (p) => {
          const hit = selector.select({ input: p.input, probs: p.probs });
          if (!hit) return;
          const ex = buildExample({ input: p.input, probs: p.probs, reason: hit.reason, model: p.manifest.model, release: p.manifest.release });
          if (mode === 'direct') outbox.add(ex);
          else writer.enqueue(ex);
        },
      });
      const server = await startLocalServer({ app, port: 0 });
      const r = await runLoad({ port: server.port, method: 'POST', path: '/v1/predict', bodies, connections: CONNECTIONS, durationMs, warmupMs: 2_000 });
      await server.stop();
      writer.stop();
      const s = outbox.stats();
      out[mode] = { ...r, outboxSelected: s.selected, evicted: s.evicted, dropped: s.dropped, writer: mode === 'writer' ? writer.stats() : undefined };
      console.error(`[edge-daemon.bench] selection at caps, ${mode}: ${r.rps}/s p50 ${r.p50Ms} p99 ${r.p99Ms} ms, ${s.selected} examples stored, non-2xx ${r.non2xx}`);
      outbox.dispose();
    }
  } finally {
    await host.dispose();
    await rm(dir, { recursive: true, force: true });
  }
  return out;
}

async function shippedDefault(rel: RealRelease, bodies: string[], o: { durationMs: number; warmupMs: number; healthzMs: number }): Promise<Record<string, unknown>> {
  const dir = await mkdtemp(join(tmpdir(), 'apprentice-bench-daemon-'));
  const d = await startDaemonWithRelease({ root: ROOT, dataDir: join(dir, 'data'), signed: rel.signed, bytes: rel.bytes, trustedKeys: rel.trustedKeys });
  const pid = d.child.pid!;
  try {
    await sleep(2_000);
    const idle = await procMemory(pid);
    const load = (method: 'GET' | 'POST', path: string, b: string[], durationMs: number, warmupMs = 0): Promise<LoadResult> =>
      runLoad({ port: d.port, method, path, bodies: b, connections: CONNECTIONS, durationMs, warmupMs });
    await load('POST', '/v1/predict', bodies, o.warmupMs); // warm-up (JIT, ORT, sockets), not recorded
    const healthz = await load('GET', '/healthz', [''], o.healthzMs, 1_000);
    const sampler = sampleMemory(pid, 100);
    const predict = await load('POST', '/v1/predict', bodies, o.durationMs, 1_000);
    const peak = await sampler.stop();
    const after = await procMemory(pid);
    const metrics = await (await fetch(`${d.apiUrl}/metrics`)).text();
    const metric = (re: RegExp) => Number(re.exec(metrics)?.[1] ?? NaN);
    const ratio = predict.rps / healthz.rps;
    const budget = { rssAnonMaxMB: 64, hwmMaxMB: 128, minShareOfHealthz: 0.2 };
    const result = {
      unitEnvironment: d.env,
      config: 'provisioning fields + dataDir + api.bind; everything else default (selection on, micro-batching off)',
      load: { connections: CONNECTIONS, warmupMs: o.warmupMs, healthzMs: o.healthzMs, predictMs: o.durationMs, body: 'single-example JSON of a real MNIST digit (raw pixels)' },
      idle,
      healthz,
      predict,
      predictShareOfHealthz: round(ratio, 3),
      memory: { samples: peak.samples, sampleEveryMs: 100, peakRssAnonMB: peak.maxRssAnonMB, peakRssMB: peak.maxRssMB, vmHwmMB: after.hwmMB, afterLoad: after },
      selection: { selected: metric(/apprentice_edge_outbox\{stat="selected"\} (\d+)/), capped: [...metrics.matchAll(/apprentice_edge_selection\{outcome="capped",reason="[a-z_]+"\} (\d+)/g)].reduce((a, m) => a + Number(m[1]), 0) },
      budget,
      withinBudget: peak.maxRssAnonMB <= budget.rssAnonMaxMB && after.hwmMB <= budget.hwmMaxMB && ratio >= budget.minShareOfHealthz && predict.non2xx === 0 && healthz.non2xx === 0,
    };
    console.error(
      `[edge-daemon.bench] shipped default: idle RssAnon ${idle.rssAnonMB} MB (RSS ${idle.rssMB}); predict ${predict.rps}/s p99 ${predict.p99Ms} ms = ${round(ratio * 100, 1)}% of healthz ${healthz.rps}/s, non-2xx ${predict.non2xx}; ` +
        `peak RssAnon ${peak.maxRssAnonMB} MB, VmHWM ${after.hwmMB} MB (${peak.samples} samples) → ${result.withinBudget ? 'within' : 'OVER'} budget`,
    );
    return result;
  } finally {
    await d.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const durationMs = arg('duration-ms', 60_000);
  const rel = await realRoundRelease(ROOT, (m) => console.error(`[edge-daemon.bench] ${m}`));
  const bodies = await digitBodies();
  const selection = want('selection') ? await selectionWrite(rel, bodies, arg('selection-ms', 10_000)) : undefined;
  const daemon = want('daemon') ? await shippedDefault(rel, bodies, { durationMs, warmupMs: arg('warmup-ms', 5_000), healthzMs: arg('healthz-ms', 10_000) }) : undefined;
  const release = { model: rel.signed.manifest.model, release: rel.signed.manifest.release, bytes: rel.bytes.byteLength, sha256: rel.signed.manifest.artifact.sha256, round: rel.round };
  const section = { at: new Date().toISOString(), node: process.version, cpus: cpus().length, loadavg: (await readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' '), release, selectionWrite: selection, shippedDefault: daemon };
  if (!only) {
    const file = join(ROOT, 'test/bench/results/edge.json');
    const prev = existsSync(file) ? (JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>) : {};
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, `${JSON.stringify({ ...prev, shippedDefault: section }, null, 2)}\n`);
  }
  console.log(JSON.stringify(section));
}

await main();
