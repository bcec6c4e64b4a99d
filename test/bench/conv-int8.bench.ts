/**
 * int8 forms of conv students in onnxruntime (issue 11): `node dist/test/bench/conv-int8.bench.js`.
 *
 * For cnn:16,32 and dscnn:16,32 on 28×28×1 (the bench students) and a wider cnn:32,64: ORT latency
 * at batch 1 (the edge's request shape), 1 intra-op thread, of the fp32 file and of the three conv lowerings
 * quantizeInt8 offers (dense layers use the default dynamic form in all):
 *   - fp32:        conv weights left in fp32 (only the dense layers are int8);
 *   - weight-only: int8 weights → DequantizeLinear → fp32 Conv (per-output-channel scales);
 *   - integer:     DynamicQuantizeLinear → ConvInteger → Cast → Mul → Add (int8 compute).
 * QLinearConv is not measured: it needs a static output scale per layer, i.e. calibration data, which
 * the bytes-in/bytes-out quantizer does not have. Rounds alternate the variants so load from other
 * processes hits all of them alike; the median round is reported.
 */
import { measureLatency } from '../../cloud/distill/evaluate.js';
import { exportToOnnx, quantizeInt8, type ConvForm } from '../../cloud/export/index.js';
import { buildModel } from '../../cloud/models/build.js';
import { parseArch } from '../../cloud/models/spec.js';
import { initBackend } from '../../cloud/tf/backend.js';
import { mulberry32 } from '../../shared/util/random.js';
import { writeBenchResult } from './common.js';

const quick = process.env.BENCH_QUICK === '1';
const rounds = quick ? 1 : 3;
const budgetMs = quick ? 300 : 1500;
await initBackend();
const r = mulberry32(5);
const sample = Float32Array.from({ length: 784 }, () => r());

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const results = [];
for (const spec of ['cnn:16,32', 'dscnn:16,32', 'cnn:32,64']) {
  const model = buildModel(parseArch(spec), { inputSize: 784, classes: 10, seed: 1 });
  const fp32 = exportToOnnx(model);
  const params = model.countParams();
  model.dispose();
  const variants: [string, Uint8Array][] = [['fp32', fp32], ...(['fp32', 'weight-only', 'integer'] as ConvForm[]).map((f): [string, Uint8Array] => [`int8 conv ${f}`, quantizeInt8(fp32, { convForm: f })])];
  const b1: Record<string, number[]> = {};
  for (let i = 0; i < rounds; i++) {
    for (const [name, bytes] of variants) {
      (b1[name] ??= []).push((await measureLatency(bytes, sample, { budgetMs })).p50Ms);
    }
  }
  const fp32B1 = median(b1.fp32!);
  const rows = variants.map(([name, bytes]) => ({ name, bytes: bytes.byteLength, batch1P50Ms: median(b1[name]!), batch1RatioVsFp32: median(b1[name]!) / fp32B1 }));
  results.push({ spec, params, rows });
  for (const row of rows) console.log(`${spec.padEnd(12)} ${row.name.padEnd(22)} ${row.bytes} B  batch-1 p50 ${row.batch1P50Ms.toFixed(4)} ms (${row.batch1RatioVsFp32.toFixed(2)}× fp32)`);
}
const file = writeBenchResult(quick ? 'conv-int8-quick' : 'conv-int8', { rounds, budgetMs, threads: 1, results });
console.log(`→ ${file}`);
