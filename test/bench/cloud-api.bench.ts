/**
 * Cloud API latency while a distillation round trains (issue: cloud). `npm run bench:cloud` runs this
 * after the ingest bench.
 *
 * Starts the real cloud (startCloud: embedded broker, registry, round runner), measures p50/p99 of
 * authenticated `GET /v1/devices` and `GET /v1/rounds/:id` with 4 concurrent clients while idle
 * (baseline), then again while a round trains in its child process. Reports the ratio.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
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

async function measure(path: () => string, until: () => boolean, minMs: number): Promise<{ n: number; p50: number; p99: number }> {
  const times: number[] = [];
  const start = performance.now();
  await Promise.all(
    [0, 1, 2, 3].map(async () => {
      while (performance.now() - start < minMs || !until()) {
        const t = performance.now();
        const r = await api(path());
        await r.arrayBuffer();
        if (!r.ok) throw new Error(`${path()}: ${r.status}`);
        times.push(performance.now() - t);
        if (performance.now() - start > 120_000) break;
      }
    }),
  );
  times.sort((a, b) => a - b);
  return { n: times.length, p50: percentileOfSorted(times, 50), p99: percentileOfSorted(times, 99) };
}

const idle = await measure(() => '/v1/devices', () => true, 5000);
const start = (await (await api('/v1/models/bench/rounds', { method: 'POST' })).json()) as { id: string };
let state = 'queued';
let trainingSeen = false;
const poll = setInterval(async () => {
  const r = (await (await api(`/v1/rounds/${start.id}`)).json()) as { state: string; progress?: { phase?: string } };
  state = r.state;
  if (r.progress?.phase === 'train') trainingSeen = true;
}, 250);
const during = await measure(() => (Math.random() < 0.5 ? '/v1/devices' : `/v1/rounds/${start.id}`), () => !['queued', 'running'].includes(state), 5000);
clearInterval(poll);
await svc.stop();
rmSync(dir, { recursive: true, force: true });

const result = { idle, duringRound: during, roundState: state, trainingSeen, p99Ratio: during.p99 / idle.p99, p50Ratio: during.p50 / idle.p50 };
const file = writeBenchResult('cloud-api', result);
console.log(
  `cloud-api: p50/p99 idle ${idle.p50.toFixed(1)}/${idle.p99.toFixed(1)} ms, during a round ${during.p50.toFixed(1)}/${during.p99.toFixed(1)} ms (${result.p99Ratio.toFixed(2)}× p99; round ${state}, ${during.n} requests) → ${file}`,
);
