/**
 * Issue 13, the cohort lines' training settings: a line's own `epochs` / `hardExampleShare` /
 * `baseLimit` / `jitter` win over the model's cohort defaults, which win over the base line's; a cohort student
 * trained on a base subset gets a larger share of its own hard examples from the same mix rule.
 */
import { describe, expect, it } from 'vitest';
import { DEMO_COHORT_LINES, demoCohortLines } from '../../../cloud/demo/run.js';
import { augmentSchema } from '../../../cloud/distill/augment.js';
import { baseSubset, cohortTrainingOf } from '../../../cloud/rounds/cohort-training.js';
import { mixTransferSet, type MixPart } from '../../../cloud/rounds/mix.js';
import { distillSettingsSchema } from '../../../cloud/rounds/settings.js';

const parse = (v: Record<string, unknown>) => distillSettingsSchema.parse({ baseData: 'mnist:train', epochs: 4, hardExampleShare: 0.5, ...v });

function part(count: number, inputSize: number, classes: number, from: number): MixPart {
  const features = new Float32Array(count * inputSize).map((_, i) => from + Math.floor(i / inputSize));
  return { features, count, labels: Int32Array.from({ length: count }, (_, i) => (from + i) % classes), teacherLogits: new Float32Array(count * classes).fill(from) };
}

describe('cohort training settings', () => {
  it('without cohort settings a cohort line trains like the base line, on all the base data', () => {
    expect(cohortTrainingOf(parse({ perGroup: true }), 'any')).toEqual({ epochs: 4, hardExampleShare: 0.5, baseLimit: undefined, jitter: 0, augment: undefined });
  });
  it("the model's cohort defaults apply to every line (perGroup has no per-line entries)", () => {
    const s = parse({ perGroup: true, cohortEpochs: 6, cohortHardExampleShare: 0.8, cohortBaseLimit: 4000, cohortJitter: 2 });
    expect(cohortTrainingOf(s, 'rotation')).toEqual({ epochs: 6, hardExampleShare: 0.8, baseLimit: 4000, jitter: 2, augment: undefined });
  });
  it("a declared line's own settings win, field by field; other lines keep the defaults", () => {
    const s = parse({
      jitter: 1,
      cohortEpochs: 3,
      cohortHardExampleShare: 0.7,
      cohorts: [
        { name: 'noisy', group: 'yard', epochs: 8, baseLimit: 2000, jitter: 2 },
        { name: 'rotated', group: 'line-2' },
      ],
    });
    expect(cohortTrainingOf(s, 'noisy')).toEqual({ epochs: 8, hardExampleShare: 0.7, baseLimit: 2000, jitter: 2, augment: undefined });
    expect(cohortTrainingOf(s, 'rotated')).toEqual({ epochs: 3, hardExampleShare: 0.7, baseLimit: undefined, jitter: 1, augment: undefined });
  });
  it("augmenting with the teacher: a line's own augment wins over cohortAugment, gets defaults, and replaces jitter", () => {
    const s = parse({
      jitter: 2,
      cohortAugment: { shift: 1.5 },
      cohorts: [
        { name: 'rotated', group: 'line-2', jitter: 1, augment: { rotate: 30, probability: 0.5 } },
        { name: 'plain', group: 'yard' },
      ],
    });
    expect(cohortTrainingOf(s, 'rotated')).toEqual({ epochs: 4, hardExampleShare: 0.5, baseLimit: undefined, jitter: 0, augment: { rotate: 30, shift: 0, scale: 0, probability: 0.5 } });
    expect(cohortTrainingOf(s, 'plain')).toMatchObject({ jitter: 0, augment: { rotate: 0, shift: 1.5, scale: 0, probability: 1 } });
  });
  it('refuses an augmentation that does nothing or is out of range, naming the field', () => {
    const bad = [{ cohortAugment: {} }, { cohortAugment: { rotate: 0, shift: 0 } }, { cohorts: [{ name: 'a', group: 'g', augment: { rotate: 200 } }] }, { cohortAugment: { rotate: 10, probability: 0 } }, { cohortAugment: { rotate: 10, flip: true } }];
    const issues = bad.map((v) => {
      const r = distillSettingsSchema.safeParse({ baseData: 'mnist:train', ...v });
      expect(r.success).toBe(false);
      return [r.error!.issues[0]!.path.join('.'), r.error!.issues[0]!.message];
    });
    expect(issues.map((i) => i[0])).toEqual(['cohortAugment', 'cohortAugment', 'cohorts.0.augment.rotate', 'cohortAugment.probability', 'cohortAugment']);
    expect(issues[0]![1]).toBe('augment needs at least one of rotate, shift, scale above 0');
  });
  it('refuses out-of-range values and unknown per-line keys, naming the field', () => {
    const bad = [
      { cohortHardExampleShare: 0.95 },
      { cohortBaseLimit: 0 },
      { cohorts: [{ name: 'a', group: 'g', hardExampleShare: -0.1 }] },
      { cohorts: [{ name: 'a', group: 'g', epochs: 2.5 }] },
      { cohorts: [{ name: 'a', group: 'g', lr: 0.1 }] },
      { cohortJitter: 9 },
    ];
    const paths = bad.map((v) => {
      const r = distillSettingsSchema.safeParse({ baseData: 'mnist:train', ...v });
      expect(r.success).toBe(false);
      return r.error!.issues[0]!.path.join('.');
    });
    expect(paths).toEqual(['cohortHardExampleShare', 'cohortBaseLimit', 'cohorts.0.hardExampleShare', 'cohorts.0.epochs', 'cohorts.0', 'cohortJitter']);
  });
});

describe('base subset for a cohort student', () => {
  const inputSize = 3;
  const classes = 2;
  const base = part(100, inputSize, classes, 0);
  const hard = part(10, inputSize, classes, 1000);

  it('keeps the first N base examples, features, labels and teacher logits aligned; no limit or a larger one keeps all', () => {
    const sub = baseSubset(base, 20, inputSize, classes);
    expect(sub.count).toBe(20);
    expect(sub.features.length).toBe(60);
    expect(sub.features[59]).toBe(19);
    expect(Array.from(sub.labels!)).toEqual(Array.from(base.labels!.subarray(0, 20)));
    expect(sub.teacherLogits.length).toBe(40);
    expect(baseSubset(base, undefined, inputSize, classes)).toBe(base);
    expect(baseSubset(base, 500, inputSize, classes)).toBe(base);
  });
  it('raises the share of the hard examples in the mix at the same repeat cap', () => {
    const o = { inputSize, classes, share: 0.75, maxRepeat: 10 };
    const all = mixTransferSet(base, hard, o).stats;
    const sub = mixTransferSet(baseSubset(base, 30, inputSize, classes), hard, o).stats;
    // All 100 base: 0.75 wants 30 repeats, the cap gives 10 → 100 hard of 200. 30 base: 9 repeats → 90 of 120.
    expect(all).toMatchObject({ baseCount: 100, hardRepeat: 10, transferCount: 200, hardShare: 0.5 });
    expect(sub).toMatchObject({ baseCount: 30, hardRepeat: 9, transferCount: 120, hardShare: 0.75 });
  });
});

describe("the demo's cohort lines", () => {
  it('one line per device shift with its own settings, valid distill settings the round reads back', () => {
    const lines = demoCohortLines({}, ['rotation', 'thickness', 'noise']);
    expect(lines.map((l) => [l.name, l.group])).toEqual([['rotation', 'rotation'], ['thickness', 'thickness'], ['noise', 'noise']]);
    const s = parse({ cohorts: lines });
    for (const shift of ['rotation', 'thickness', 'noise'] as const) {
      const d = DEMO_COHORT_LINES[shift];
      const augment = d.augment ? augmentSchema.parse(d.augment) : undefined;
      expect(cohortTrainingOf(s, shift)).toEqual({ epochs: d.epochs, hardExampleShare: d.hardExampleShare, baseLimit: d.baseLimit, jitter: augment ? 0 : d.jitter, augment });
    }
  });
  it('options given override every line', () => {
    const [rot] = demoCohortLines({ cohortEpochs: 3, cohortJitter: 1 }, ['rotation']);
    expect(rot).toEqual({ name: 'rotation', group: 'rotation', ...DEMO_COHORT_LINES.rotation, epochs: 3, jitter: 1 });
  });
  it('per-line overrides apply after the options, to their line only', () => {
    const [rot, noise] = demoCohortLines({ cohortEpochs: 3, cohortLineOverrides: { rotation: { augment: { rotate: 15 }, epochs: 5 } } }, ['rotation', 'noise']);
    expect(rot).toEqual({ name: 'rotation', group: 'rotation', ...DEMO_COHORT_LINES.rotation, epochs: 5, augment: { rotate: 15 } });
    expect(noise).toEqual({ name: 'noise', group: 'noise', ...DEMO_COHORT_LINES.noise, epochs: 3 });
  });
  it('a null override removes the setting (a control run without the line augmentation)', () => {
    const [rot] = demoCohortLines({ cohortLineOverrides: { rotation: { augment: null } } }, ['rotation']);
    const { augment: _, ...rest } = DEMO_COHORT_LINES.rotation;
    expect(rot).toEqual({ name: 'rotation', group: 'rotation', ...rest });
    expect(cohortTrainingOf(parse({ cohorts: [rot] }), 'rotation').augment).toBeUndefined();
  });
});
