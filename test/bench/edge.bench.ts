/**
 * Edge bench: local API throughput and latency, ORT in-process, micro-batching on/off, RSS, cold start,
 * RSS after 200 hot swaps. Built by `npm run build`; run `node dist/test/bench/edge.bench.js`
 * (options: --duration-ms 5000 --connections 16 --swaps 200 --hidden 0 --only name,name).
 * Writes test/bench/results/edge.json (edge-h<N>.json with --hidden N) and prints a one-line summary.
 *
 * Load comes from a child process (test/bench/http-load.ts): N keep-alive sockets, closed loop.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { Registry } from 'prom-client';
import { createLocalApi, type LocalApiDeps } from '../../edge/api/app.js';
import { startLocalServer, type LocalServer } from '../../edge/api/server.js';
import { ModelHost } from '../../edge/runtime/host.js';
import { ModelSession, type ModelSessionOptions } from '../../edge/runtime/session.js';
import type { Manifest } from '../../shared/protocol/index.js';
import { denseModel, makeManifest, sampleInputs, writeModel } from '../fixtures/onnx-models.js';
import { percentileOfSorted } from '../../shared/util/percentile.js';
import { round, runLoad, type LoadResult, type LoadSpec } from './http-load.js';

const SELF = fileURLToPath(import.meta.url);
const ROOT = resolve(dirname(SELF), '../../..');
const MB = 1024 * 1024;

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

// ───────────────────────────── child: cold start ─────────────────────────────

/** The daemon's order: bind the API first (readyz 503), then load the model (readyz 200). */
async function serveChild(modelPath: string, manifestPath: string): Promise<void> {
  const manifest = JSON.parse(await readFile(manifestPath, 'utf8')) as Manifest;
  const host = new ModelHost();
  const app = createLocalApi({ host, metrics: new Registry(), feedback: () => ({ stored: false }) });
  const server = await startLocalServer({ app, port: 0 });
  process.stdout.write(`${server.port}\n`);
  await host.activate(modelPath, manifest);
  process.on('SIGTERM', () => {
    void server.stop().then(() => host.dispose()).then(() => process.exit(0));
  });
}

// ───────────────────────────── child: hot swaps ─────────────────────────────

async function swapsChild(paths: [string, string], manifestPaths: [string, string], swaps: number, arena: boolean): Promise<void> {
  const manifests = (await Promise.all(manifestPaths.map(async (p) => JSON.parse(await readFile(p, 'utf8')) as Manifest))) as [Manifest, Manifest];
  const host = new ModelHost({ sessionOptions: { enableCpuMemArena: arena } });
  const x = sampleInputs(1, manifests[0].input.shape.reduce((a, b) => a * b, 1));
  const gc = (globalThis as { gc?: () => void }).gc;
  const rss = () => {
    gc?.();
    return process.memoryUsage().rss;
  };
  const swap = async (i: number) => {
    const load = Array.from({ length: 8 }, () => host.predict(x, 1).catch(() => undefined));
    await host.activate(paths[i % 2]!, { ...manifests[i % 2]!, release: i + 1 });
    await Promise.all(load);
  };
  // Warm: first sessions allocate ORT's process-wide state (thread pools, kernels registry).
  for (let i = 0; i < 10; i++) await swap(i);
  const before = rss();
  const t0 = performance.now();
  const checkpointsMB: number[] = [];
  for (let i = 10; i < 10 + swaps; i++) {
    await swap(i);
    if ((i - 9) % 50 === 0) checkpointsMB.push(round(rss() / MB, 1));
  }
  const ms = performance.now() - t0;
  await new Promise((r) => setTimeout(r, 50));
  const after = rss();
  const stats = host.stats();
  await host.dispose();
  const mallocArenaMax = process.env.MALLOC_ARENA_MAX ?? null;
  process.stdout.write(`${JSON.stringify({ swaps, arena, mallocArenaMax, rssBeforeMB: round(before / MB, 1), rssAfterMB: round(after / MB, 1), growthMB: round((after - before) / MB, 1), checkpointsMB, msPerSwap: round(ms / swaps, 2), stats })}\n`);
}

// ───────────────────────────── parent ─────────────────────────────

function runChild(args: string[], nodeArgs: string[] = [], env: Record<string, string> = {}): Promise<string> {
  return new Promise((res, rej) => {
    const cp = spawn(process.execPath, [...nodeArgs, SELF, '--child', ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
    let out = '';
    cp.stdout.on('data', (d: Buffer) => (out += d.toString()));
    cp.on('error', rej);
    cp.on('exit', (code) => (code === 0 ? res(out) : rej(new Error(`child ${args[0]} exited with ${code}`))));
  });
}

type Measured = LoadResult & {
  /** Server CPU time (user + system, this process: the server runs here) per request. */
  serverCpuUsPerReq: number;
  /** 1e6 / serverCpuUsPerReq: requests/s one core could serve; robust to other load on the machine. */
  perCoreCapacity: number;
  rssMaxMB?: number;
};

async function load(port: number, method: 'GET' | 'POST', path: string, bodies: string[], o: { connections: number; durationMs: number; warmupMs: number }, sampleRss = false): Promise<Measured> {
  let rssMax = 0;
  const timer = sampleRss ? setInterval(() => (rssMax = Math.max(rssMax, process.memoryUsage().rss)), 200) : undefined;
  const spec: LoadSpec = { port, method, path, bodies, ...o };
  const cpu0 = process.cpuUsage();
  const r = await runLoad(spec);
  const cpu = process.cpuUsage(cpu0);
  if (timer) clearInterval(timer);
  const us = (cpu.user + cpu.system) / Math.max(1, r.totalRequests);
  const m: Measured = { ...r, serverCpuUsPerReq: round(us, 1), perCoreCapacity: round(1e6 / us, 0) };
  return sampleRss ? { ...m, rssMaxMB: round(rssMax / MB, 1) } : m;
}

async function withApi<T>(deps: Partial<LocalApiDeps> & Pick<LocalApiDeps, 'host'>, fn: (port: number) => Promise<T>): Promise<T> {
  const app = createLocalApi({ metrics: new Registry(), feedback: () => ({ stored: false }), ...deps });
  const server: LocalServer = await startLocalServer({ app, port: 0 });
  try {
    return await fn(server.port);
  } finally {
    await server.stop();
  }
}

/** The reference: a plain Hono + onnxruntime handler with no validation, metrics or bookkeeping. */
async function withPlain<T>(modelPath: string, opts: ModelSessionOptions, fn: (port: number) => Promise<T>): Promise<T> {
  const session = await InferenceSession.create(modelPath, { intraOpNumThreads: opts.intraOpNumThreads ?? 1, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all' });
  const app = new Hono().post('/p', async (c) => {
    const { input } = (await c.req.json()) as { input: number[] };
    const out = await session.run({ x: new Tensor('float32', Float32Array.from(input), [1, input.length]) });
    return c.json({ probabilities: Array.from(out.y!.data as Float32Array) });
  });
  const server = await new Promise<ReturnType<typeof serve>>((res) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => res(s));
  });
  try {
    return await fn((server.address() as { port: number }).port);
  } finally {
    await new Promise((r) => server.close(r));
    (server as unknown as { closeAllConnections(): void }).closeAllConnections();
    await session.release();
  }
}

async function inProcess(modelPath: string, manifest: Manifest, iterations: number): Promise<{ ortRunsPerSec: number; ortP50Ms: number; ortP99Ms: number; hostRunsPerSec: number }> {
  const session = await ModelSession.create(modelPath, manifest);
  const x = sampleInputs(1, 784);
  for (let i = 0; i < 500; i++) await session.run(x, 1);
  const lat: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < iterations; i++) {
    const s = performance.now();
    await session.run(x, 1);
    lat.push(performance.now() - s);
  }
  const ms = performance.now() - t0;
  await session.dispose();
  const host = new ModelHost();
  await host.activate(modelPath, manifest);
  for (let i = 0; i < 500; i++) await host.predict(x, 1);
  const t1 = performance.now();
  for (let i = 0; i < iterations; i++) await host.predict(x, 1);
  const hostMs = performance.now() - t1;
  await host.dispose();
  lat.sort((a, b) => a - b);
  return { ortRunsPerSec: round((iterations / ms) * 1000, 0), ortP50Ms: round(percentileOfSorted(lat, 50), 4), ortP99Ms: round(percentileOfSorted(lat, 99), 4), hostRunsPerSec: round((iterations / hostMs) * 1000, 0) };
}

/** Spawns the serve-only child; resolves once it prints its port (it listens before the model is ready). */
async function startServeChild(modelPath: string, manifestPath: string, nodeArgs: string[] = []): Promise<{ cp: ReturnType<typeof spawn>; port: number }> {
  const cp = spawn(process.execPath, [...nodeArgs, SELF, '--child', 'serve', modelPath, manifestPath], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((res, rej) => {
    let out = '';
    cp.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) res(Number(out.trim()));
    });
    cp.on('exit', (code) => rej(new Error(`serve child exited with ${code}`)));
  });
  return { cp, port };
}

async function coldStart(modelPath: string, manifestPath: string): Promise<{ toListeningMs: number; toReadyMs: number }> {
  const t0 = performance.now();
  const { cp, port } = await startServeChild(modelPath, manifestPath);
  const toListeningMs = performance.now() - t0;
  let toReadyMs = NaN;
  for (;;) {
    const r = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined);
    if (r?.status === 200) {
      toReadyMs = performance.now() - t0;
      break;
    }
    if (performance.now() - t0 > 30_000) break;
    await new Promise((res) => setTimeout(res, 5));
  }
  cp.kill('SIGTERM');
  await new Promise((res) => cp.once('exit', res));
  return { toListeningMs: round(toListeningMs, 0), toReadyMs: round(toReadyMs, 0) };
}

/** VmRSS of another process, from /proc (Linux). */
async function procRssMB(pid: number): Promise<number> {
  const m = /VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
  return m ? round(Number(m[1]) / 1024, 1) : NaN;
}

/**
 * RSS of a process that does nothing but serve the local API (the daemon's shape, unlike this bench
 * process, which also ran the in-process and plain-handler scenarios): idle after ready, and the
 * maximum under the JSON predict load. `nodeArgs` lets us try V8 heap settings.
 */
async function serverProcessRss(modelPath: string, manifestPath: string, bodies: string[], o: { connections: number; durationMs: number; warmupMs: number }, nodeArgs: string[] = []): Promise<{ nodeArgs: string[]; idleMB: number; underLoadMaxMB: number; rps: number }> {
  const { cp, port } = await startServeChild(modelPath, manifestPath, nodeArgs);
  try {
    for (let i = 0; i < 600; i++) {
      const r = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined);
      if (r?.status === 200) break;
      await new Promise((res) => setTimeout(res, 10));
    }
    await new Promise((res) => setTimeout(res, 500));
    const idleMB = await procRssMB(cp.pid!);
    let maxMB = idleMB;
    const timer = setInterval(() => void procRssMB(cp.pid!).then((v) => (maxMB = Math.max(maxMB, v))).catch(() => undefined), 200);
    const m = await load(port, 'POST', '/v1/predict', bodies, o);
    clearInterval(timer);
    return { nodeArgs, idleMB, underLoadMaxMB: maxMB, rps: m.rps };
  } finally {
    cp.kill('SIGTERM');
  }
}

async function main(): Promise<void> {
  const durationMs = arg('duration-ms', 5000);
  const connections = arg('connections', 16);
  const swaps = arg('swaps', 200);
  // 0: the MatMul+Add 784→10 student (HTTP overhead dominates); --hidden 128 adds a Relu layer.
  const hidden = arg('hidden', 0);
  const o = { connections, durationMs, warmupMs: 1000 };
  const dir = await mkdtemp(join(tmpdir(), 'apprentice-edge-bench-'));
  try {
    const sizes = hidden > 0 ? [784, hidden, 10] : [784, 10];
    const model = denseModel({ sizes, seed: 1 });
    const modelB = denseModel({ sizes, seed: 2 });
    const manifest = makeManifest(model);
    const manifestB = makeManifest(modelB, { release: 2 });
    const path = await writeModel(dir, model);
    const pathB = await writeModel(dir, modelB);
    const manPath = join(dir, 'a.json');
    const manPathB = join(dir, 'b.json');
    await writeFile(manPath, JSON.stringify(manifest));
    await writeFile(manPathB, JSON.stringify(manifestB));

    const rows = Array.from({ length: 8 }, (_, i) => sampleInputs(1, 784, 1000 + i));
    const jsonBodies = rows.map((r) => JSON.stringify({ input: Array.from(r, (v) => Math.round(v * 1e4) / 1e4) }));
    const u8Bodies = rows.map((r) => JSON.stringify({ input_b64: Buffer.from(Uint8Array.from(r, (v) => Math.round(v * 255))).toString('base64'), encoding: 'uint8' }));

    const onlyArg = process.argv.indexOf('--only');
    const only = onlyArg >= 0 ? new Set(process.argv[onlyArg + 1]!.split(',')) : undefined;
    const want = (name: string) => !only || only.has(name);

    const inproc = want('inproc') ? await inProcess(path, manifest, 20_000) : undefined;
    if (inproc) console.error(`[edge.bench] in-process: ORT ${inproc.ortRunsPerSec}/s p50 ${inproc.ortP50Ms} ms, via ModelHost ${inproc.hostRunsPerSec}/s`);

    const host = new ModelHost();
    await host.activate(path, manifest);
    const rssIdleMB = round(process.memoryUsage().rss / MB, 1);
    const batching = { maxBatch: 32, maxWaitMs: 0 };
    const scenarios: Record<string, () => Promise<Measured>> = {
      bareHealthz: () => withApi({ host, batching: false }, (port) => load(port, 'GET', '/healthz', [''], o)),
      plainHonoOrt: () => withPlain(path, {}, (port) => load(port, 'POST', '/p', jsonBodies, o)),
      jsonBatchingOff: () => withApi({ host, batching: false }, (port) => load(port, 'POST', '/v1/predict', jsonBodies, o, true)),
      jsonBatchingOn: () => withApi({ host, batching }, (port) => load(port, 'POST', '/v1/predict', jsonBodies, o, true)),
      u8BatchingOff: () => withApi({ host, batching: false }, (port) => load(port, 'POST', '/v1/predict', u8Bodies, o)),
      u8BatchingOn: () => withApi({ host, batching }, (port) => load(port, 'POST', '/v1/predict', u8Bodies, o)),
    };
    const http: Record<string, Measured> = {};
    for (const [name, run] of Object.entries(scenarios)) {
      if (!want(name)) continue;
      const r = await run();
      http[name] = r;
      console.error(`[edge.bench] ${name}: ${r.rps}/s p50 ${r.p50Ms} p99 ${r.p99Ms} ms, server ${r.serverCpuUsPerReq} µs CPU/req (${r.perCoreCapacity}/s per core), non-2xx ${r.non2xx}`);
    }
    await host.dispose();

    const rssProcess = [];
    for (const args of want('rssproc') ? [[], ['--max-semi-space-size=1']] : []) {
      const r = await serverProcessRss(path, manPath, jsonBodies, o, args);
      rssProcess.push(r);
      console.error(`[edge.bench] server process ${args.join(' ') || '(default V8 flags)'}: RSS idle ${r.idleMB} MB, under load max ${r.underLoadMaxMB} MB at ${r.rps}/s`);
    }
    const cold = want('cold') ? await coldStart(path, manPath) : undefined;
    if (cold) console.error(`[edge.bench] cold start: listening ${cold.toListeningMs} ms, ready ${cold.toReadyMs} ms`);
    // ORT's CPU arena on/off, and glibc limited to 2 malloc arenas (fragmentation across ORT's threads
    // is a usual suspect for RSS that grows although every session is released).
    const swapRuns: { growthMB: number; arena: boolean; mallocArenaMax: string | null }[] = [];
    const swapVariants: [boolean, Record<string, string>][] = [[true, {}], [false, {}], [true, { MALLOC_ARENA_MAX: '2' }]];
    for (const [arena, env] of want('swaps') ? swapVariants : []) {
      const out = await runChild(['swaps', path, pathB, manPath, manPathB, String(swaps), String(arena)], ['--expose-gc'], env);
      swapRuns.push(JSON.parse(out) as (typeof swapRuns)[number]);
      console.error(`[edge.bench] ${swaps} swaps: ${out.trim()}`);
    }
    const loadavg = (await readFile('/proc/loadavg', 'utf8').catch(() => '')).split(' ').slice(0, 3).join(' ');

    const result = {
      at: new Date().toISOString(),
      node: process.version,
      cpus: cpus().length,
      cpu: cpus()[0]?.model,
      loadavgAfter: loadavg,
      model: { sizes, bytes: model.bytes.byteLength },
      load: { connections, durationMs, warmupMs: o.warmupMs, client: 'raw keep-alive sockets, closed loop, separate process' },
      http,
      inProcess: inproc,
      rss: { idleMB: rssIdleMB, underLoadMaxMB: { batchingOff: http.jsonBatchingOff?.rssMaxMB, batchingOn: http.jsonBatchingOn?.rssMaxMB }, serverProcess: rssProcess },
      coldStart: cold,
      swaps: swapRuns,
    };
    // A partial run (--only) prints but does not replace the recorded results.
    if (!only) {
      const outDir = join(ROOT, 'test/bench/results');
      await mkdir(outDir, { recursive: true });
      const file = join(outDir, hidden > 0 ? `edge-h${hidden}.json` : 'edge.json');
      // edge-daemon.bench.ts (the shipped default) writes its own section into the same file: keep it.
      const prev = (await readFile(file, 'utf8').then((t) => JSON.parse(t) as { shippedDefault?: unknown }).catch(() => ({}))) as { shippedDefault?: unknown };
      await writeFile(file, `${JSON.stringify({ ...result, shippedDefault: prev.shippedDefault }, null, 2)}\n`);
    }
    const f = (m: Measured | undefined) => (m ? `${m.rps}/s (p50 ${m.p50Ms}, p99 ${m.p99Ms} ms, ${m.serverCpuUsPerReq} µs CPU/req)` : 'n/a');
    const best = Math.max(http.jsonBatchingOff?.rps ?? 0, http.jsonBatchingOn?.rps ?? 0);
    console.log(
      `edge bench (${sizes.join('→')}, ${connections} conns, ${cpus().length} cpus, loadavg ${loadavg}): predict json ${f(http.jsonBatchingOff)}` +
        ` | batching on ${f(http.jsonBatchingOn)} | b64-uint8 ${f(http.u8BatchingOff)}, batching on ${f(http.u8BatchingOn)}` +
        ` | plain hono+ort ${f(http.plainHonoOrt)} | bare /healthz ${f(http.bareHealthz)} | in-process ORT ${inproc?.ortRunsPerSec ?? 'n/a'}/s` +
        ` | RSS idle ${rssIdleMB} MB, under load ${http.jsonBatchingOff?.rssMaxMB ?? 'n/a'}/${http.jsonBatchingOn?.rssMaxMB ?? 'n/a'} MB (batching off/on) | cold start to ready ${cold?.toReadyMs ?? 'n/a'} ms` +
        ` | ${swaps} swaps RSS ${swapRuns.map((s) => `${s.growthMB >= 0 ? '+' : ''}${s.growthMB} MB (ORT arena ${s.arena ? 'on' : 'off'}${s.mallocArenaMax ? `, MALLOC_ARENA_MAX=${s.mallocArenaMax}` : ''})`).join(', ') || 'n/a'}` +
        ` | 10000/s target ${best >= 10_000 ? 'met' : 'not met'}`,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const childIdx = process.argv.indexOf('--child');
if (childIdx >= 0) {
  const [kind, ...rest] = process.argv.slice(childIdx + 1);
  if (kind === 'serve') {
    await serveChild(rest[0]!, rest[1]!);
  } else if (kind === 'swaps') {
    await swapsChild([rest[0]!, rest[1]!], [rest[2]!, rest[3]!], Number(rest[4]), rest[5] === 'true');
  } else {
    throw new Error(`unknown child ${kind}`);
  }
} else {
  await main();
}
