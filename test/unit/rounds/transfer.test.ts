import * as tf from '@tensorflow/tfjs';
import { eq } from 'drizzle-orm';
import sharp from 'sharp';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadPackedWeightsInto, loadWeightsInto, packWeights, saveWeights } from '../../../cloud/distill/warm-start.js';
import { buildModel } from '../../../cloud/models/build.js';
import { parseArch } from '../../../cloud/models/spec.js';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { parseRoundModel, RoundConfigError } from '../../../cloud/rounds/settings.js';
import { loadBaseData, loadHardExamples, sameImageSpec } from '../../../cloud/rounds/transfer-set.js';
import { preprocessImage } from '../../../shared/image/preprocess.js';
import type { ImageSpec } from '../../../shared/protocol/schemas.js';
import { chooseLearningRate } from '../../../cloud/rounds/lr.js';
import { distillSettingsSchema } from '../../../cloud/rounds/settings.js';
import { Teacher } from '../../../cloud/teacher/ort-teacher.js';
import { denseModel, sampleInputs, writeModel } from '../../fixtures/onnx-models.js';
import { registryDialects } from '../../helpers/dialects.js';
import { insertExamples, insertModel, openRegistry, tempDir } from './helpers.js';

const dialects = registryDialects();

describe.each(dialects)('hard examples from the registry on $name', (d) => {
  const tmp = tempDir();
  let registry: StoreRegistry;
  let teacherA: Teacher;
  let teacherB: Teacher;
  const a = denseModel({ sizes: [16, 3], seed: 1 });
  const b = denseModel({ sizes: [16, 3], seed: 2 });

  beforeEach(async (ctx) => {
    registry = await d.open(ctx);
    await insertModel(registry, { name: 'tiny' });
    await insertModel(registry, { name: 'other' });
  });
  afterEach(() => d.close());
  beforeAll(async () => {
    teacherA = await Teacher.create([await writeModel(tmp.dir, a)]);
    teacherB = await Teacher.create([await writeModel(tmp.dir, b)]);
  });
  afterAll(async () => {
    await teacherA.dispose();
    await teacherB.dispose();
    tmp.cleanup();
  });

  it('computes teacher logits only where missing or from another teacher, and stores them', async () => {
    const x = sampleInputs(5, 16);
    const rows = Array.from({ length: 5 }, (_, i) => x.slice(i * 16, (i + 1) * 16));
    const ids = await insertExamples(registry, 'tiny', rows.slice(0, 3), [2, null, 7], '2030-01-01T00:00:00.000Z');
    await insertExamples(registry, 'tiny', rows.slice(3), [], '2030-01-02T00:00:00.000Z');
    await insertExamples(registry, 'tiny', [new Float32Array(3)], [], '2030-01-03T00:00:00.000Z'); // does not fit the model
    await insertExamples(registry, 'other', rows.slice(0, 1));
    const opts = { inputSize: 16, classes: 3, window: 100 };

    const h1 = await loadHardExamples(registry, 'tiny', teacherA, opts);
    expect(h1).toMatchObject({ count: 5, skipped: 1, computed: 5 });
    // Newest first: rows 3 and 4, then rows 0..2 (ties in any order). Label 7 is out of range: unlabelled.
    expect(new Set(h1.ids.slice(0, 2))).not.toContain(ids[0]);
    expect(ids.map((id) => h1.labels[h1.ids.indexOf(id)])).toEqual([2, -1, -1]);
    const expected = a.forward(x, 5);
    const row0 = h1.ids.indexOf(ids[0]!);
    Array.from(h1.teacherLogits.subarray(row0 * 3, row0 * 3 + 3)).forEach((v, k) => expect(v).toBeCloseTo(expected[k]!, 4));
    const { examples } = registry.t;
    const stored = (await registry.q.select().from(examples).where(eq(examples.id, ids[0]!)))[0]!;
    expect(stored.teacherId).toBe(teacherA.id);
    expect(stored.teacherLogits!.byteLength).toBe(12);

    expect((await loadHardExamples(registry, 'tiny', teacherA, opts)).computed).toBe(0);
    const h3 = await loadHardExamples(registry, 'tiny', teacherB, opts);
    expect(h3.computed).toBe(5);
    expect((await registry.q.select().from(examples).where(eq(examples.id, ids[0]!)))[0]!.teacherId).toBe(teacherB.id);
    // The window counts rows before the misfit ones are dropped: the newest row is the misfit.
    expect(await loadHardExamples(registry, 'tiny', teacherB, { ...opts, window: 2 })).toMatchObject({ count: 1, skipped: 1 });
  });
});

describe.each(dialects)('hard examples of an image model whose teacher has its own image form (issue 11) on $name', (d) => {
  const tmp = tempDir();
  let registry: StoreRegistry;
  let teacher: Teacher;
  // The student reads 8×8 grey NHWC (64 values); the teacher 4×4 grey with another normalisation (16).
  const studentImage: ImageSpec = { height: 8, width: 8, channels: 1, layout: 'nhwc', mean: [0], std: [1] };
  const teacherImage: ImageSpec = { height: 4, width: 4, channels: 1, layout: 'nchw', mean: [0.5], std: [0.25] };
  const net = denseModel({ sizes: [16, 3], seed: 3 });
  const png = (seed: number) => sharp(Buffer.from(Array.from({ length: 64 }, (_, i) => (i * 37 + seed * 101) % 256)), { raw: { width: 8, height: 8, channels: 1 } }).png().toBuffer();

  beforeEach(async (ctx) => {
    registry = await d.open(ctx);
    await insertModel(registry, { name: 'cam' });
  });
  afterEach(() => d.close());
  beforeAll(async () => {
    teacher = await Teacher.create([await writeModel(tmp.dir, net)]);
  });
  afterAll(async () => {
    await teacher.dispose();
    tmp.cleanup();
  });

  it("feeds the teacher its own preprocessing of each source image, and leaves out rows it cannot see", async () => {
    const sources = [await png(1), await png(2), null, Buffer.from('not an image at all')];
    const inputs = await Promise.all(sources.map(async (src) => (src && sharpReadable(src) ? preprocessImage(src, studentImage, { maxPixels: 1e6 }) : new Float32Array(64).fill(0.5))));
    const ids = await insertExamples(registry, 'cam', inputs, [], undefined, { sources });
    const h = await loadHardExamples(registry, 'cam', teacher, { inputSize: 64, classes: 3, window: 10, studentImage, teacherImage });
    expect(h).toMatchObject({ count: 2, fromSource: 2, noSource: 2, skipped: 0, computed: 2 });
    for (const k of [0, 1]) {
      const row = h.ids.indexOf(ids[k]!);
      // The student's features are the stored 8×8 input; the teacher's logits come from its own 4×4 view of the PNG.
      expect(Array.from(h.features.subarray(row * 64, row * 64 + 64))).toEqual(Array.from(inputs[k]!));
      const expected = net.forward(await preprocessImage(sources[k]!, teacherImage, { maxPixels: 1e6 }), 1);
      Array.from(h.teacherLogits.subarray(row * 3, row * 3 + 3)).forEach((v, j) => expect(v).toBeCloseTo(expected[j]!, 4));
    }
    // Stored logits are reused: a second load computes none and still keeps both.
    expect(await loadHardExamples(registry, 'cam', teacher, { inputSize: 64, classes: 3, window: 10, studentImage, teacherImage })).toMatchObject({ count: 2, computed: 0 });
  });

  it('reads the stored inputs when the teacher shares the student\'s image form', async () => {
    expect(sameImageSpec(studentImage, { ...studentImage })).toBe(true);
    expect(sameImageSpec(studentImage, teacherImage)).toBe(false);
    const tiny = denseModel({ sizes: [64, 3], seed: 4 });
    const t64 = await Teacher.create([await writeModel(tmp.dir, tiny)]);
    try {
      await insertModel(registry, { name: 'cam2' });
      await insertExamples(registry, 'cam2', [new Float32Array(64).fill(0.25)], [], undefined, { sources: [null] });
      expect(await loadHardExamples(registry, 'cam2', t64, { inputSize: 64, classes: 3, window: 10, studentImage, teacherImage: studentImage })).toMatchObject({ count: 1, noSource: 0, fromSource: 0 });
    } finally {
      await t64.dispose();
    }
  });
});

/** Whether the bytes start like a PNG (the fixtures' malformed source does not). */
const sharpReadable = (b: Buffer) => b[0] === 0x89;

describe('base data and holdout', () => {
  it('carves a fixed holdout out of the base data, or loads a separate one, and checks the input spec', async () => {
    const settings = distillSettingsSchema.parse({ baseData: 'mnist:train', baseLimit: 200, holdout: 'split:50' });
    const a = await loadBaseData(settings, 784, { scale: 1 / 255, offset: 0 });
    const b = await loadBaseData(settings, 784);
    expect([a.train.count, a.holdout.count]).toEqual([150, 50]);
    expect(Array.from(b.holdout.labels)).toEqual(Array.from(a.holdout.labels)); // same seed, same holdout
    const sep = await loadBaseData(distillSettingsSchema.parse({ baseData: 'mnist:train', baseLimit: 10, holdout: 'mnist:test', holdoutLimit: 20 }), 784);
    expect([sep.train.count, sep.holdout.count]).toEqual([10, 20]);
    await expect(loadBaseData(settings, 100)).rejects.toThrow('distillSettings.baseData: examples have 784 values, the model\'s input spec has 100');
    await expect(loadBaseData(settings, 784, { scale: 1, offset: 0 })).rejects.toThrow(/data scaling .* differs from the model's input spec/);
    await expect(loadBaseData({ ...settings, holdout: 'unlabeled:mnist:test' }, 784)).rejects.toThrow(RoundConfigError);
  });
});

describe('base data from images:DIR', () => {
  const tmp = tempDir();
  it("preprocesses every image to the model's input.image, base data and holdout alike", async () => {
    const sharp = (await import('sharp')).default;
    const { mkdirSync, writeFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    for (const [label, side] of [['a', 10], ['b', 17]] as const) {
      mkdirSync(join(tmp.dir, 'imgs', label), { recursive: true });
      mkdirSync(join(tmp.dir, 'held', label), { recursive: true });
      for (let i = 0; i < 3; i++) {
        const png = await sharp(Buffer.alloc(side * side, 40 * i), { raw: { width: side, height: side, channels: 1 } }).toColourspace('b-w').png().toBuffer();
        writeFileSync(join(tmp.dir, 'imgs', label, `${i}.png`), png);
        writeFileSync(join(tmp.dir, 'held', label, `${i}.png`), png);
      }
    }
    const image = { height: 8, width: 8, channels: 1 as const, layout: 'nhwc' as const, mean: [0], std: [1] };
    const settings = distillSettingsSchema.parse({ baseData: `images:${join(tmp.dir, 'imgs')}`, holdout: `images:${join(tmp.dir, 'held')}` });
    const d = await loadBaseData(settings, 64, { scale: 1 / 255, offset: 0 }, image);
    expect([d.train.count, d.holdout.count]).toEqual([6, 6]);
    expect(d.train.shape).toEqual([8, 8, 1]);
    expect(d.train.labelNames).toEqual(['a', 'b']);
    // Without the model's image form the sizes differ (10×10 and 17×17): refused, naming the file.
    await expect(loadBaseData(settings, 64)).rejects.toThrow(/is (10×10|17×17), but the first image is (17×17|10×10); give the model.s input.image/);
  });
  afterAll(() => tmp.cleanup());
});

describe('warm start weights', () => {
  const tmp = tempDir();
  afterAll(() => tmp.cleanup());

  it('loads weights into the same architecture and refuses a different one', async () => {
    await tf.setBackend('cpu');
    const arch = parseArch('mlp:4');
    const src = buildModel(arch, { inputSize: 6, classes: 3, seed: 1 });
    const base = `${tmp.dir}/w`;
    await saveWeights(src, base, arch.text);
    const dst = buildModel(arch, { inputSize: 6, classes: 3, seed: 99 });
    expect(await loadWeightsInto(dst, base, arch.text)).toEqual({ loaded: true });
    const x = tf.ones([1, 6]);
    expect(Array.from((dst.predict(x) as tf.Tensor).dataSync())).toEqual(Array.from((src.predict(x) as tf.Tensor).dataSync()));
    const wider = buildModel(parseArch('mlp:5'), { inputSize: 6, classes: 3 });
    expect(await loadWeightsInto(wider, base, 'mlp:5')).toEqual({ loaded: false, reason: 'architecture changed (mlp:4 → mlp:5)' });
    const moreInputs = buildModel(arch, { inputSize: 7, classes: 3 });
    expect(await loadWeightsInto(moreInputs, base, arch.text)).toMatchObject({ loaded: false, reason: expect.stringContaining('has shape [6,4], model needs [7,4]') });
    expect(await loadWeightsInto(dst, `${tmp.dir}/missing`, arch.text)).toMatchObject({ loaded: false, reason: expect.stringContaining('ENOENT') });
    tf.dispose([x]);
    for (const m of [src, dst, wider, moreInputs]) m.dispose();
  });

  it('packs weights into one blob (the artifact store form) with the same checks, and refuses malformed bytes', async () => {
    await tf.setBackend('cpu');
    const arch = parseArch('mlp:4');
    const src = buildModel(arch, { inputSize: 6, classes: 3, seed: 1 });
    const packed = packWeights(src, arch.text);
    const dst = buildModel(arch, { inputSize: 6, classes: 3, seed: 99 });
    const x = tf.ones([1, 6]);
    const before = Array.from((dst.predict(x) as tf.Tensor).dataSync());
    expect(loadPackedWeightsInto(dst, packed, arch.text)).toEqual({ loaded: true });
    const after = Array.from((dst.predict(x) as tf.Tensor).dataSync());
    expect(after).not.toEqual(before);
    expect(after).toEqual(Array.from((src.predict(x) as tf.Tensor).dataSync()));
    const wider = buildModel(parseArch('mlp:5'), { inputSize: 6, classes: 3 });
    expect(loadPackedWeightsInto(wider, packed, 'mlp:5')).toEqual({ loaded: false, reason: 'architecture changed (mlp:4 → mlp:5)' });
    expect(loadPackedWeightsInto(dst, packed.subarray(0, packed.byteLength - 4), arch.text)).toMatchObject({ loaded: false, reason: expect.stringMatching(/weights file has \d+ bytes, expected/) });
    expect(loadPackedWeightsInto(dst, packed.subarray(0, 3), arch.text)).toMatchObject({ loaded: false, reason: expect.stringContaining('malformed') });
    expect(loadPackedWeightsInto(dst, Uint8Array.from([2, 0, 0, 0, 123, 120]), arch.text)).toEqual({ loaded: false, reason: 'parent weights index is not JSON' });
    expect(loadPackedWeightsInto(dst, Uint8Array.from([4, 0, 0, 0, ...Buffer.from('null')]), arch.text)).toEqual({ loaded: false, reason: 'parent weights index has an unknown format' });
    tf.dispose([x]);
    for (const m of [src, dst, wider]) m.dispose();
  });
});

describe('learning rate', () => {
  it('uses a fixed rate, tunes "auto" on labelled base data, and falls back without labels', async () => {
    await tf.setBackend('cpu');
    const n = 200;
    const features = new Float32Array(n * 4).map((_, i) => ((i * 7919) % 13) / 13);
    const labels = Int32Array.from({ length: n }, (_, i) => (features[i * 4]! > 0.5 ? 1 : 0));
    const teacherLogits = new Float32Array(n * 2).map((_, i) => (i % 2 === labels[i >> 1] ? 2 : -2));
    const base = { features, count: n, labels, teacherLogits };
    const dims = { inputSize: 4, classes: 2 };
    const arch = parseArch('mlp:4');
    const s = distillSettingsSchema.parse({ baseData: 'x:y', lr: 0.01 });
    expect(await chooseLearningRate(arch, base, s, dims)).toEqual({ learningRate: 0.01 });
    const auto = distillSettingsSchema.parse({ baseData: 'x:y', lr: 'auto', lrCandidates: [1e-3, 1e-2], epochs: 1, batchSize: 32 });
    const tuned = await chooseLearningRate(arch, base, auto, dims);
    expect([1e-3, 1e-2]).toContain(tuned.learningRate);
    expect(tuned.tuning).toMatchObject({ holdout: 20, trials: [{ learningRate: 1e-3 }, { learningRate: 1e-2 }] });
    expect(await chooseLearningRate(arch, { ...base, labels: undefined }, auto, dims)).toEqual({ learningRate: 1e-2, note: 'lr auto: no labelled base data to tune on, used 0.01' });
  });
});

describe('round settings', () => {
  const tmp = tempDir();
  afterAll(() => tmp.cleanup());

  it('fills defaults and reports invalid fields as column.path', async () => {
    const registry = openRegistry(tmp.dir);
    try {
      await insertModel(registry, { name: 'ok', distillSettings: { baseData: 'mnist:train' }, schedule: { minNewExamples: 5 } });
      await insertModel(registry, { name: 'bad', distillSettings: { baseData: 'mnist:train', artifact: 'fp16', hardExampleShare: 2 } });
      const rows = await registry.q.select().from(registry.t.models);
      const ok = parseRoundModel(rows.find((r) => r.name === 'ok')!);
      expect(ok.settings).toMatchObject({ temperature: 20, alpha: 0.9, tolerance: 0.01, artifact: 'int8', holdout: 'split:0.1', hardExampleShare: 0.2, validityDays: 30, warmStart: true });
      expect(ok.schedule).toMatchObject({ intervalSeconds: 3600, minNewExamples: 5, autoRollout: false, rollout: { target: { kind: 'all' }, canaryShare: 0.1 } });
      expect(() => parseRoundModel(rows.find((r) => r.name === 'bad')!)).toThrow(RoundConfigError);
      // The admin API's field names are accepted too.
      expect(distillSettingsSchema.parse({ baseData: 'mnist:train', limit: 500, quantization: 'fp32', lr: 'auto' })).toMatchObject({ baseLimit: 500, artifact: 'fp32', lr: 'auto' });
      expect(() => parseRoundModel(rows.find((r) => r.name === 'bad')!)).toThrow(/^model bad: distillSettings\.hardExampleShare: .*; distillSettings\.artifact: /);
    } finally {
      registry.dispose();
    }
  });

  it('accepts conv students on an image input spec and names a bad student spec', async () => {
    const registry = openRegistry(tmp.dir);
    try {
      await insertModel(registry, { name: 'cnn', studentSpec: 'dscnn:8,16/32', distillSettings: { baseData: 'mnist:train' } });
      await insertModel(registry, { name: 'badcnn', studentSpec: 'cnn:8/', distillSettings: { baseData: 'mnist:train' } });
      const rows = await registry.q.select().from(registry.t.models);
      expect(parseRoundModel(rows.find((r) => r.name === 'cnn')!).studentSpec).toBe('dscnn:8,16/32');
      expect(() => parseRoundModel(rows.find((r) => r.name === 'badcnn')!)).toThrow(/^model badcnn: studentSpec: unknown architecture "cnn:8\/"/);
    } finally {
      registry.dispose();
    }
  });
});
