import { describe, expect, it } from 'vitest';
import { augmentation, epochsPerSeed, fits, seedList, studentPlan, teacherPlan } from '../../bench/distill-plan.js';
import { oneLine, spread, targets, type StudentRow } from '../../bench/distill-summary.js';

describe('distill bench plan', () => {
  it('reads the MLP and conv settings from the environment, conv falling back to the general ones', () => {
    const env = { BENCH_EPOCHS: '8', BENCH_SEARCH_EPOCHS: '2', BENCH_RECIPES: '1:0,4:0.5,4:0.9', BENCH_CONV_EPOCHS: '3', BENCH_CONV_RECIPES: '4:0.5', BENCH_CONV_LR: '0.003' };
    const mlp = studentPlan('mlp:64', env, false);
    expect(mlp).toMatchObject({ epochs: 8, searchEpochs: 2, learningRate: 'auto', tuneEpochs: 2 });
    expect(mlp.recipes).toEqual([{ temperature: 1, alpha: 0 }, { temperature: 4, alpha: 0.5 }, { temperature: 4, alpha: 0.9 }]);
    const cnn = studentPlan('cnn:8,16/32', env, false);
    expect(cnn).toMatchObject({ epochs: 3, searchEpochs: 2, learningRate: 0.003, recipes: [{ temperature: 4, alpha: 0.5 }] });
  });

  it('refuses malformed settings with the variable named', () => {
    expect(() => studentPlan('mlp:64', { BENCH_EPOCHS: 'ten' }, false)).toThrow(/BENCH_EPOCHS=ten/);
    expect(() => studentPlan('mlp:64', { BENCH_LR: '7' }, false)).toThrow(/BENCH_LR=7/);
    expect(() => studentPlan('cnn:8', { BENCH_CONV_RECIPES: '4' }, false)).toThrow(/bad candidate/);
  });

  it('counts the epochs of one seed: tuning, one labels trial per recipe, one distillation trial per alpha > 0, two final runs', () => {
    const p = studentPlan('mlp:64', { BENCH_EPOCHS: '8', BENCH_SEARCH_EPOCHS: '2', BENCH_TUNE_EPOCHS: '1', BENCH_RECIPES: '1:0,2.5:0.5,4:0.5,4:0.9' }, false);
    expect(epochsPerSeed(p)).toBe(3 * 1 + (4 + 3) * 2 + 2 * 8);
    const c = studentPlan('cnn:8', { BENCH_CONV_EPOCHS: '3', BENCH_CONV_SEARCH_EPOCHS: '1', BENCH_CONV_RECIPES: '4:0.5', BENCH_CONV_LR: '0.003' }, false);
    expect(epochsPerSeed(c)).toBe(0 + (1 + 1) * 1 + 2 * 3);
  });

  it('defaults to a conv teacher cached under a path named by its architecture; MLP teachers keep their own recipe', () => {
    expect(teacherPlan({}, false)).toEqual({ arch: 'cnn:16,32/128', file: 'test/bench/fixtures/teacher-cnn16x32x128.onnx', epochs: 8, dropout: 0.5, inputDropout: 0, learningRate: 2e-3, jitter: 2 });
    const mlp = teacherPlan({ BENCH_TEACHER_ARCH: 'mlp:1200,1200', BENCH_TEACHER_EPOCHS: '6' }, false);
    expect(mlp).toMatchObject({ file: '.cache/bench/teacher-mlp1200x1200.onnx', epochs: 6, inputDropout: 0.2, learningRate: 1e-3 });
    expect(teacherPlan({ BENCH_TEACHER_FILE: 'x.onnx' }, true)).toMatchObject({ file: 'x.onnx', epochs: 1 });
    expect(teacherPlan({}, true).file).toBe('.cache/bench/teacher-quick.onnx');
    expect(() => teacherPlan({ BENCH_TEACHER_ARCH: 'cnn:16,x' }, false)).toThrow(/BENCH_TEACHER_ARCH/);
    expect(() => teacherPlan({ BENCH_TEACHER_EPOCHS: '-1' }, false)).toThrow(/BENCH_TEACHER_EPOCHS=-1/);
  });

  it('runs seeds 1..BENCH_SEEDS, or exactly BENCH_SEED_LIST so seeds can be split over processes', () => {
    expect(seedList({}, false)).toEqual([1, 2, 3]);
    expect(seedList({}, true)).toEqual([1]);
    expect(seedList({ BENCH_SEEDS: '2' }, false)).toEqual([1, 2]);
    expect(seedList({ BENCH_SEED_LIST: '3, 2', BENCH_SEEDS: '5' }, false)).toEqual([3, 2]);
    expect(() => seedList({ BENCH_SEED_LIST: '1,1' }, false)).toThrow(/BENCH_SEED_LIST=1,1/);
    expect(() => seedList({ BENCH_SEED_LIST: '0' }, false)).toThrow(/BENCH_SEED_LIST=0/);
    expect(() => seedList({ BENCH_SEEDS: '1.5' }, false)).toThrow(/BENCH_SEEDS=1.5/);
  });

  it('reads the augmentation both sides share, refusing malformed values', () => {
    expect(augmentation({})).toEqual({ jitter: 2, functionMatching: false });
    expect(augmentation({ BENCH_JITTER: '0', BENCH_FUNCTION_MATCHING: '1' })).toEqual({ jitter: 0, functionMatching: true });
    expect(() => augmentation({ BENCH_JITTER: '1.5' })).toThrow(/BENCH_JITTER=1.5/);
    expect(() => augmentation({ BENCH_JITTER: '20' })).toThrow(/BENCH_JITTER=20/);
    expect(() => augmentation({ BENCH_FUNCTION_MATCHING: 'yes' })).toThrow(/BENCH_FUNCTION_MATCHING=yes/);
  });

  it('a seed runs only if the elapsed time plus its projected cost is within the budget', () => {
    expect(fits(100, 200, 300)).toBe(true);
    expect(fits(100, 201, 300)).toBe(false);
  });
});

describe('distill bench targets', () => {
  const row = (student: string, params: number, labels: number[], distilled: number[], p50: number): StudentRow => ({
    student, params, seeds: labels.map((_, i) => i + 1), labelsOnly: spread(labels), distilled: spread(distilled), distilledInt8: spread(distilled), testCount: 10_000,
    chosen: [], latency: { fp32P50Ms: p50, int8P50Ms: p50 * 2 }, bytes: { fp32: 1, int8: 1 }, training: { samplesPerSec: 1, gflops: 1, seconds: 1 },
  });

  it('states a target whose students were not run as null (not measured), never as met or missed', () => {
    const t = targets([row('mlp:32', 25_450, [300, 310, 320], [290, 300, 330], 0.05)], [{ student: 'cnn:8,16/32', seed: 1 }, { student: 'cnn:8,16/32', seed: 2 }]);
    expect(t.mlp64StrictlyBetter).toBeNull();
    expect(t.cnnUnder50kAt0_9PctAnd0_1Ms.met).toBeNull();
    expect(t.distilledAtLeastLabelsOnly).toEqual({ 'mlp:32': true });
    expect(t.notMeasured).toEqual([{ student: 'cnn:8,16/32', seeds: [1, 2] }]);
    const line = oneLine([row('mlp:32', 25_450, [300, 310, 320], [290, 300, 330], 0.05)], t, 172, 61.4);
    expect(line).toContain('mlp:32 (25450 params, 3 seeds) labels-only 310.0 ± 10.0 vs distilled 306.7 ± 20.8');
    expect(line).toContain('mlp:64 strictly better not measured');
    expect(line).toContain('not measured (budget): cnn:8,16/32 seeds 1,2');
  });

  it('checks the CNN target on the mean error and the faster shipped form', () => {
    const t = targets([row('cnn:8,16/32', 26_698, [100, 100, 100], [85, 90, 92], 0.08), row('mlp:64', 50_890, [200, 210, 220], [190, 200, 230], 0.03)]);
    expect(t.cnnUnder50kAt0_9PctAnd0_1Ms.met).toBe(true);
    expect(t.cnnUnder50kAt0_9PctAnd0_1Ms.candidates[0]!.testErrorPct).toBeCloseTo(0.89, 2);
    expect(t.mlp64StrictlyBetter).toBe(true);
    expect(t.seedsPerStudent).toEqual({ 'cnn:8,16/32': 3, 'mlp:64': 3 });
  });
});
