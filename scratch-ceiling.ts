// Scratch (not committed): capacity ceiling of mlp:64 on the noise shift, evaluated on device 3's TRAFFIC pool (not the eval pool).
import * as tf from '@tensorflow/tfjs';
import { loadDataset } from './shared/data/index.js';
import { initBackend } from './cloud/tf/backend.js';
import { buildModel } from './cloud/models/build.js';
import { parseArch } from './cloud/models/spec.js';
import { trainModel } from './cloud/distill/trainer.js';
import { SHIFTS, mapImages } from './cloud/demo/shifts.js';
import { splitPools } from './cloud/demo/pools.js';
import { mulberry32 } from './shared/util/random.js';

const arch = process.argv[2] ?? 'mlp:64';
const noisyShare = Number(process.argv[3] ?? 1);
const n = Number(process.argv[4] ?? 20000);
const jitter = Number(process.argv[5] ?? 0);
await initBackend();
const train = await loadDataset('mnist:train', { limit: n, shuffleSeed: 1 });
const test = await loadDataset('mnist:test');
const r = mulberry32(5);
const feats = mapImages(train.features, 784, (img) => (r() < noisyShare ? SHIFTS.noise.apply(img, r) : Float32Array.from(img)));
const pools = splitPools(test.count, 3, 1000);
const idx = pools[2]!.traffic;
const r2 = mulberry32(77);
const ef = new Float32Array(idx.length * 784);
const el = new Int32Array(idx.length);
for (let i = 0; i < idx.length; i++) { ef.set(SHIFTS.noise.apply(test.features.subarray(idx[i]! * 784, (idx[i]! + 1) * 784), r2), i * 784); el[i] = test.labels![idx[i]!]!; }
const model = buildModel(parseArch(arch, 'a'), { inputSize: 784, classes: 10, seed: 1, ...(arch.includes('cnn') ? { imageShape: [28, 28, 1] as [number, number, number] } : {}) });
const t0 = Date.now();
await trainModel(model, { features: feats, inputSize: 784, count: train.count, classes: 10, labels: train.labels }, { epochs: 6, batchSize: 128, learningRate: 3e-3, jitter });
const pred = (model.predict(tf.tensor2d(ef, [idx.length, 784])) as tf.Tensor).argMax(1).dataSync();
let ok = 0; for (let i = 0; i < el.length; i++) if (pred[i] === el[i]) ok++;
console.log(JSON.stringify({ arch, noisyShare, n, jitter, acc: ok / el.length, s: (Date.now() - t0) / 1000 }));
