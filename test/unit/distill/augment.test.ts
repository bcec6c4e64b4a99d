/**
 * Augmenting with the teacher (cloud/distill/augment.ts): the affine transform against the demo's own
 * rotate/translate (shifts.ts), the background fill, the per-example probability, and the trainer
 * feeding the teacher exactly the augmented views (function matching).
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { rotate, translate } from '../../../cloud/demo/shifts.js';
import { affineInto, augmentInto, augmentSchema, describeAugment } from '../../../cloud/distill/augment.js';
import { trainModel } from '../../../cloud/distill/trainer.js';
import { buildModel } from '../../../cloud/models/build.js';
import { parseArch } from '../../../cloud/models/spec.js';
import { mulberry32 } from '../../../shared/util/random.js';

const SIDE = 12;
/** A random sparse "digit": background 0, a few bright strokes. */
function image(seed: number, side = SIDE): Float32Array {
  const r = mulberry32(seed);
  return Float32Array.from({ length: side * side }, () => (r() < 0.3 ? r() : 0));
}
const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);

describe('affineInto', () => {
  it('rotation alone is the demo shift rotate() (same centre, direction and bilinear sampling)', () => {
    const img = image(1);
    for (const deg of [-37, 12.5, 90]) {
      const out = new Float32Array(SIDE * SIDE);
      affineInto(img, 0, out, 0, SIDE, deg, 1, 0, 0);
      expect(maxDiff(out, rotate(img, deg, SIDE))).toBeLessThan(1e-5);
    }
  });
  it('a whole-pixel shift is translate(); the source offset and destination offset are honoured', () => {
    const a = image(2);
    const b = image(3);
    const src = new Float32Array(2 * SIDE * SIDE);
    src.set(a, 0);
    src.set(b, SIDE * SIDE);
    const dst = new Float32Array(3 * SIDE * SIDE).fill(7);
    affineInto(src, SIDE * SIDE, dst, 2 * SIDE * SIDE, SIDE, 0, 1, 2, -1);
    expect(maxDiff(dst.subarray(2 * SIDE * SIDE), translate(b, 2, -1, SIDE))).toBeLessThan(1e-6);
    expect(dst.subarray(0, 2 * SIDE * SIDE).every((v) => v === 7)).toBe(true);
  });
  it("pixels from outside the image take the image's minimum (a normalised background), not 0", () => {
    const img = image(4).map((v) => v - 0.42);
    const out = new Float32Array(SIDE * SIDE);
    affineInto(img, 0, out, 0, SIDE, 0, 1, 3, 0);
    for (let y = 0; y < SIDE; y++) for (let x = 0; x < 3; x++) expect(out[y * SIDE + x]).toBeCloseTo(-0.42, 6);
  });
  it('scale 2 about the centre magnifies: the centre stays, a pixel 2 from the centre lands 4 from it', () => {
    const side = 13; // odd: the centre is a pixel
    const img = new Float32Array(side * side);
    img[6 * side + 6] = 1;
    img[6 * side + 8] = 0.5;
    const out = new Float32Array(side * side);
    affineInto(img, 0, out, 0, side, 0, 2, 0, 0);
    expect(out[6 * side + 6]).toBeCloseTo(1, 6);
    expect(out[6 * side + 10]).toBeCloseTo(0.5, 6);
  });
});

describe('augmentInto', () => {
  it('with probability p, about that share of examples is transformed; the rest are exact copies', () => {
    const aug = augmentSchema.parse({ rotate: 30, shift: 1, probability: 0.3 });
    const rand = mulberry32(5);
    const img = image(6);
    const out = new Float32Array(SIDE * SIDE);
    let copies = 0;
    const n = 2000;
    for (let i = 0; i < n; i++) {
      augmentInto(aug, img, 0, out, 0, SIDE, rand);
      if (maxDiff(out, img) === 0) copies++;
    }
    expect(copies / n).toBeGreaterThan(0.65);
    expect(copies / n).toBeLessThan(0.75);
  });
  it('draws angles over the whole declared range, both ways', () => {
    // A single pixel right of the centre: its new angle is the drawn rotation.
    const side = 21;
    const img = new Float32Array(side * side);
    img[10 * side + 18] = 1;
    const aug = augmentSchema.parse({ rotate: 40 });
    const rand = mulberry32(7);
    const out = new Float32Array(side * side);
    const angles: number[] = [];
    for (let i = 0; i < 400; i++) {
      augmentInto(aug, img, 0, out, 0, side, rand);
      let sx = 0, sy = 0, m = 0;
      out.forEach((v, k) => { sx += v * (k % side); sy += v * Math.floor(k / side); m += v; });
      // Image y grows downwards: counter-clockwise is towards smaller y.
      angles.push((Math.atan2(-(sy / m - 10), sx / m - 10) * 180) / Math.PI);
    }
    expect(Math.min(...angles)).toBeLessThan(-35);
    expect(Math.max(...angles)).toBeGreaterThan(35);
    expect(angles.every((a) => Math.abs(a) <= 40.5)).toBe(true);
  });
  it('describes itself for progress lines', () => {
    expect(describeAugment(augmentSchema.parse({ rotate: 40, probability: 0.5 }))).toBe('rotate ±40°, p 0.5');
    expect(describeAugment(augmentSchema.parse({ shift: 2, scale: 0.1 }))).toBe('shift ±2 px, scale ±10%');
  });
});

describe('trainModel with augment', () => {
  beforeAll(async () => {
    await tf.setBackend('cpu');
  });
  const data = (n: number) => {
    const features = new Float32Array(n * 16);
    const labels = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      features[i * 16 + (i % 16)] = 1;
      labels[i] = i % 4;
    }
    return { features, inputSize: 16, count: n, classes: 4, labels, teacherLogits: new Float32Array(n * 4) };
  };

  it('the teacher scores the augmented views, which are not the stored examples', async () => {
    const d = data(32);
    const seen: Float32Array[] = [];
    const model = buildModel(parseArch('mlp:4'), { inputSize: 16, classes: 4, seed: 1 });
    await trainModel(model, d, {
      epochs: 1, batchSize: 16, learningRate: 1e-2, alpha: 1, seed: 2, augment: augmentSchema.parse({ rotate: 45 }),
      teacher: async (batch, n) => {
        seen.push(batch.slice());
        return new Float32Array(n * 4);
      },
    });
    const originals = new Set(Array.from({ length: 32 }, (_, i) => d.features.subarray(i * 16, (i + 1) * 16).join()));
    const rows = seen.flatMap((b) => Array.from({ length: b.length / 16 }, (_, i) => b.subarray(i * 16, (i + 1) * 16).join()));
    expect(rows).toHaveLength(32);
    expect(rows.filter((r) => originals.has(r)).length).toBeLessThan(8);
    model.dispose();
  });
  it('refuses augment with jitter, and on non-square inputs', async () => {
    const model = buildModel(parseArch('mlp:4'), { inputSize: 16, classes: 4, seed: 1 });
    const aug = augmentSchema.parse({ shift: 1 });
    await expect(trainModel(model, data(8), { epochs: 1, batchSize: 8, learningRate: 1e-2, alpha: 1, jitter: 1, augment: aug })).rejects.toThrow('augment and jitter are exclusive');
    model.dispose();
    const flat = buildModel(parseArch('mlp:4'), { inputSize: 15, classes: 4, seed: 1 });
    const set = { features: new Float32Array(8 * 15), inputSize: 15, count: 8, classes: 4, teacherLogits: new Float32Array(32) };
    await expect(trainModel(flat, set, { epochs: 1, batchSize: 8, learningRate: 1e-2, alpha: 1, augment: aug })).rejects.toThrow('augment needs square images');
    flat.dispose();
  });
});
