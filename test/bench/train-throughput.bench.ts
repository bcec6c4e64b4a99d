/** Only the training-throughput part of the distill bench: `node dist/test/bench/train-throughput.bench.js`. */
import { initBackend } from '../../cloud/tf/backend.js';
import { writeBenchResult } from './common.js';
import { measureTrainingThroughput } from './train-throughput.js';

const backend = await initBackend();
const probe = await measureTrainingThroughput({});
const file = writeBenchResult(backend.wasmMatMulOverride || backend.name !== 'wasm' ? 'train-throughput' : 'train-throughput-no-override', { backend, ...probe });
console.log(
  `train-throughput: ${probe.arch} distillation ${Math.round(probe.median.distillSamplesPerSec)} samples/s = ${probe.median.distillGflops.toFixed(1)} GFLOP/s, ` +
    `${(100 * probe.median.share).toFixed(0)}% of the forward matMul rate (${probe.median.forwardGflops.toFixed(1)} GFLOP/s) [${backend.name}, override ${backend.wasmMatMulOverride ? 'on' : 'off'}] → ${file}`,
);
