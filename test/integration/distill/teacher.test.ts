import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { exportToOnnx } from '../../../cloud/export/index.js';
import { cachedTeacherLogits } from '../../../cloud/teacher/logit-cache.js';
import { Teacher, TeacherError } from '../../../cloud/teacher/ort-teacher.js';
import { initBackend } from '../../../cloud/tf/backend.js';
import { mulberry32 } from '../../../shared/util/random.js';

const dir = mkdtempSync(join(tmpdir(), 'apprentice-teacher-'));
const rand = (n: number, seed: number) => {
  const r = mulberry32(seed);
  return Float32Array.from({ length: n }, () => r() * 2 - 1);
};

function linearModel(seed: number, activation: 'linear' | 'softmax') {
  const m = tf.sequential();
  m.add(tf.layers.dense({ inputShape: [6], units: 4, activation, kernelInitializer: tf.initializers.randomNormal({ seed }) }));
  return m;
}

let logitsA: string, logitsB: string, probsA: string;
let modelA: tf.Sequential, modelB: tf.Sequential;
const x = rand(6 * 5, 9);

beforeAll(async () => {
  await initBackend();
  modelA = linearModel(1, 'linear');
  modelB = linearModel(2, 'linear');
  const probs = linearModel(1, 'softmax');
  probs.setWeights(modelA.getWeights());
  writeFileSync((logitsA = join(dir, 'a.onnx')), exportToOnnx(modelA));
  writeFileSync((logitsB = join(dir, 'b.onnx')), exportToOnnx(modelB));
  writeFileSync((probsA = join(dir, 'a-probs.onnx')), exportToOnnx(probs));
});

const tfOut = (m: tf.LayersModel) => tf.tidy(() => (m.predict(tf.tensor2d(x, [5, 6])) as tf.Tensor).dataSync() as Float32Array);

describe('Teacher (onnxruntime)', () => {
  it('returns the model logits', async () => {
    const t = await Teacher.create([logitsA], { batchSize: 2 });
    const { logits, classes } = await t.logits(x, 6);
    expect(classes).toBe(4);
    const ref = tfOut(modelA);
    for (let i = 0; i < ref.length; i++) expect(logits[i]).toBeCloseTo(ref[i]!, 4);
    await t.dispose();
  });

  it('averages an ensemble member-wise', async () => {
    const t = await Teacher.create([logitsA, logitsB]);
    const { logits } = await t.logits(x, 6);
    const a = tfOut(modelA);
    const b = tfOut(modelB);
    for (let i = 0; i < a.length; i++) expect(logits[i]).toBeCloseTo((a[i]! + b[i]!) / 2, 4);
    expect(t.size).toBe(2);
    await t.dispose();
  });

  it('turns probability outputs into log-probabilities (same softmax as the logits)', async () => {
    const t = await Teacher.create([probsA], { outputKind: 'probs' });
    const { logits } = await t.logits(x, 6);
    const z = tfOut(modelA);
    for (let r = 0; r < 5; r++) {
      const row = Array.from(z.slice(r * 4, r * 4 + 4));
      const lse = Math.log(row.reduce((s, v) => s + Math.exp(v), 0));
      for (let c = 0; c < 4; c++) expect(logits[r * 4 + c]).toBeCloseTo(row[c]! - lse, 4);
    }
    await t.dispose();
  });

  it('rejects bad teachers with a clear error', async () => {
    await expect(Teacher.create([])).rejects.toThrow(TeacherError);
    const empty = join(dir, 'empty.onnx');
    writeFileSync(empty, '');
    await expect(Teacher.create([empty])).rejects.toThrow(/empty file/);
    const junk = join(dir, 'junk.onnx');
    writeFileSync(junk, Buffer.from([8, 1, 18, 3, 1, 2]));
    await expect(Teacher.create([junk])).rejects.toThrow(/junk\.onnx: not a loadable ONNX model/);
    const t = await Teacher.create([logitsA]);
    await expect(t.logits(new Float32Array(10), 5)).rejects.toThrow(/does not fit examples of 5 values/);
    await t.dispose();
  });

  it('computes teacher logits once and serves them from the cache afterwards', async () => {
    const t = await Teacher.create([logitsA]);
    let calls = 0;
    const counting = Object.assign(Object.create(Object.getPrototypeOf(t)), t, {
      logits: async (f: Float32Array, s: number) => {
        calls++;
        return t.logits(f, s);
      },
    }) as Teacher;
    const cacheDir = join(dir, 'cache');
    const first = await cachedTeacherLogits(counting, x, 6, { dir: cacheDir });
    const second = await cachedTeacherLogits(counting, x, 6, { dir: cacheDir });
    expect(first.cached).toBe(false);
    expect(second.cached).toBe(true);
    expect(calls).toBe(1);
    expect(Array.from(second.logits)).toEqual(Array.from(first.logits));
    await t.dispose();
  });
});
