import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseArch } from '../../../cloud/models/spec.js';
import { chooseRoundRecipe } from '../../../cloud/rounds/recipe.js';
import { distillSettingsSchema } from '../../../cloud/rounds/settings.js';
import { mulberry32 } from '../../../shared/util/random.js';

/** 4×4 images with one bright pixel; the class is its quadrant. Teacher logits favour the label. */
function base(n: number) {
  const r = mulberry32(4);
  const features = new Float32Array(n * 16);
  const labels = new Int32Array(n);
  const teacherLogits = new Float32Array(n * 4);
  for (let i = 0; i < n; i++) {
    const y = Math.floor(r() * 4);
    const x = Math.floor(r() * 4);
    features[i * 16 + y * 4 + x] = 1;
    labels[i] = (y >> 1) * 2 + (x >> 1);
    teacherLogits[i * 4 + labels[i]!] = 3;
  }
  return { features, count: n, labels, teacherLogits };
}

describe('round recipe', () => {
  beforeAll(async () => {
    await tf.setBackend('cpu');
  });
  const arch = parseArch('mlp:8');
  const dims = { inputSize: 16, classes: 4, learningRate: 1e-2, elapsedSeconds: 0 };
  const settings = (o: Record<string, unknown>) => distillSettingsSchema.parse({ baseData: 'x:y', epochs: 2, batchSize: 32, temperature: 7, alpha: 0.8, ...o });

  it('fixed (the default) uses the settings', async () => {
    expect(await chooseRoundRecipe(arch, base(200), settings({}), dims)).toEqual({ mode: 'fixed', temperature: 7, alpha: 0.8, learningRate: 1e-2 });
  });

  it('search runs label training, then the recipes, on a split of the base data, and keeps the best', async () => {
    const r = await chooseRoundRecipe(arch, base(200), settings({ recipe: 'search', searchEpochs: 1 }), dims);
    expect(r.mode).toBe('search');
    expect(r.note).toBeUndefined();
    const { labelsOnly, distillation } = r.search!;
    expect(labelsOnly.trials).toHaveLength(6);
    expect(labelsOnly.validationCount).toBe(20);
    expect(distillation.trials[0]!.alpha).toBe(0);
    expect(distillation.trials.length + distillation.skipped.length).toBe(6);
    const best = Math.min(...distillation.trials.map((t) => t.validationErrors));
    expect(distillation.trials.find((t) => t.validationErrors === best)).toMatchObject({ temperature: r.temperature, alpha: r.alpha, learningRate: r.learningRate });
  });

  it('falls back to the settings, and says why, with no time left or no labels', async () => {
    const late = await chooseRoundRecipe(arch, base(200), settings({ recipe: 'search', roundMinutes: 10, reserveMinutes: 5 }), { ...dims, elapsedSeconds: 301 });
    expect(late).toMatchObject({ mode: 'fixed', temperature: 7, alpha: 0.8 });
    expect(late.note).toMatch(/no time left in the round's 10-minute limit/);
    const unl = await chooseRoundRecipe(arch, { ...base(200), labels: undefined }, settings({ recipe: 'search' }), dims);
    expect(unl.note).toMatch(/no labelled base data/);
  });

  it('rejects bad recipe settings', () => {
    expect(() => distillSettingsSchema.parse({ baseData: 'x:y', recipe: 'grid' })).toThrow();
    expect(() => distillSettingsSchema.parse({ baseData: 'x:y', roundMinutes: 0 })).toThrow();
  });
});
