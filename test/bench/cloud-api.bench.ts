/**
 * Cloud API latency while a distillation round trains (issue: cloud). `npm run bench:cloud` runs this
 * after the ingest bench.
 *
 * Starts the real cloud (startCloud: embedded broker, registry, round runner), measures p50/p99 of
 * authenticated `GET /v1/devices` and `GET /v1/models/bench/rounds` (the same mix, half each, in both
 * phases) with 4 concurrent clients while idle (baseline), then again while a round trains in its child
 * process. Reports the ratio. Both phases are preceded by a discarded warm-up and need at least
 * MIN_SAMPLES requests, so the p99 rests on at least 20 samples above it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCloud } from '../../cloud/server.js';
import { cloudConfigSchema } from '../../cloud/config/schema.js';
import { trainTeacher } from '../../cloud/teacher/train-teacher.js';
import { silentLogger } from '../../shared/log/index.js';
import { writeBenchResult } from './common.js';
import { percentileOfSorted } from '../../shared/util/percentile.js';

const dir = mkdtempSync(join(tmpdir(), 'apprentice-bench-cloud-'));
const teacher = join(dir, 'teacher.onnx');
await trainTeacher({ data: 'mnist:train', limit: 5000, arch: 'mlp:256', dropout: 0, inputDropout: 0, epochs: 1, batchSize: 128, learningRate: 1e-3, jitter: 0, seed: 1, out: teacher });
const cfg = cloudConfigSchema.parse({ dataDir: join(dir, 'cloud'), api: { bind: '127.0.0.1:0' }, mqtt: { embedded: { bind: '127.0.0.1:0' } } });
const svc = await startCloud(cfg, { log: silentLogger });
const auth = { authorization: `Bearer ${svc.adminToken}`, 'content-type': 'application/json' };
const api = (path: string, init: RequestInit = {}) => fetch(`${svc.apiUrl}${path}`, { ...init, headers: auth });

const put = await api('/v1/models/bench', {
  method: 'PUT',
  body: JSON.stringify({
    inputSpec: { shape: [784], dtype: 'float32', scaling: { scale: 1 / 255, offset: 0 }, raw: 'uint8' },
    labels: ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'],
    teacher: { files: [teacher], outputKind: 'logits' },
    studentSpec: 'mlp:256,256',
    distill: { baseData: 'mnist:train', baseLimit: 30000, holdout: 'mnist:test', holdoutLimit: 2000, epochs: 3, temperature: 4, alpha: 0.9 },
  }),
});
if (!put.ok) throw new Error(`PUT model: ${put.status} ${await put.text()}`);
for (let i = 0; i < 20; i++) await api('/v1/devices', { method: 'POST', body: JSON.stringify({ id: `bench-${i}` }) });

/** Requests per phase at least: p99 then rests on >= 20 samples above it. */
const MIN_SAMPLES = 2000;
/** The same routes, half each, idle and during the round. */
const route = (): string => (Math.random() < 0.5 ? '/v1/devices' : '/v1/models/bench/rounds');

async function measure(until: () => boolean, { minMs, minSamples }: { minMs: number; minSamples: number }): Promise<{ n: number; p50: number; p99: number; seconds: number }> {
  const times: number[] = [];
  const start = performance.now();
  await Promise.all(
    [0, 1, 2, 3].map(async () => {
      while (performance.now() - start < minMs || times.length < minSamples || !until()) {
        const path = route();
        const t = performance.now();
        const r = await api(path);
        await r.arrayBuffer();
        if (!r.ok) throw new Error(`${path}: ${r.status}`);
        times.push(performance.now() - t);
        if (performance.now() - start > 300_000) break;
      }
    }),
  );
  times.sort((a, b) => a - b);
  return { n: times.length, p50: percentileOfSorted(times, 50), p99: percentileOfSorted(times, 99), seconds: (performance.now() - start) / 1000 };
}

const loadBefore = loadavg();
// Warm-up (JIT, statement cache, sockets), discarded.
await measure(() => true, { minMs: 2000, minSamples: 0 });
const idle = await measure(() => true, { minMs: 5000, minSamples: MIN_SAMPLES });
const start = (await (await api('/v1/models/bench/rounds', { method: 'POST' })).json()) as { id: string };
let state = 'queued';
let trainingSeen = false;
const poll = setInterval(async () => {
  const r = (await (await api(`/v1/rounds/${start.id}`)).json()) as { state: string; progress?: { phase?: string } };
  state = r.state;
  if (r.progress?.phase === 'train') trainingSeen = true;
}, 250);
// The round's first seconds (worker start, data load) are its own warm-up: measured like the rest.
const during = await measure(() => !['queued', 'running'].includes(state), { minMs: 5000, minSamples: MIN_SAMPLES });
clearInterval(poll);
await svc.stop();
rmSync(dir, { recursive: true, force: true });

const loadAfter = loadavg();
const result = {
  loadedMachine: (loadBefore[0] ?? 0) > cpus().length / 2,
  loadavgBefore: loadBefore,
  loadavgAfter: loadAfter,
  routes: ['/v1/devices', '/v1/models/bench/rounds'],
  concurrency: 4,
  minSamples: MIN_SAMPLES,
  idle,
  duringRound: during,
  roundState: state,
  trainingSeen,
  p99Ratio: during.p99 / idle.p99,
  p50Ratio: during.p50 / idle.p50,
};
const file = writeBenchResult('cloud-api', result);
console.log(
  `cloud-api: p50/p99 idle ${idle.p50.toFixed(1)}/${idle.p99.toFixed(1)} ms, during a round ${during.p50.toFixed(1)}/${during.p99.toFixed(1)} ms (${result.p99Ratio.toFixed(2)}× p99; round ${state}, ${during.n} requests) → ${file}`,
);
