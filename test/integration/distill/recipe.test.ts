import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { runDistill } from '../../../cloud/distill/pipeline.js';
import { exportToOnnx } from '../../../cloud/export/index.js';
import { buildModel } from '../../../cloud/models/build.js';
import { parseArch } from '../../../cloud/models/spec.js';
import { trainTeacher } from '../../../cloud/teacher/train-teacher.js';
import { initBackend } from '../../../cloud/tf/backend.js';
import { UsageError } from '../../../shared/cli/errors.js';
import { mulberry32 } from '../../../shared/util/random.js';

/**
 * Tiny fixture: 8×8 greyscale images of 4 classes (a 3×3 blob in one of four regions, jittered by a
 * pixel, plus noise), 400 for training and 200 for test, as CSV.
 */
const dir = mkdtempSync(join(tmpdir(), 'apprentice-recipe-'));
function writeImages(file: string, n: number, seed: number): void {
  const r = mulberry32(seed);
  const rows = ['label,' + Array.from({ length: 64 }, (_, i) => `p${i}`).join(',')];
  for (let k = 0; k < n; k++) {
    const label = k % 4;
    const img = Array.from({ length: 64 }, () => 0.3 * r());
    const cy = (label >> 1) * 4 + 1 + Math.floor(r() * 2);
    const cx = (label & 1) * 4 + 1 + Math.floor(r() * 2);
    for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) img[(cy + dy) * 8 + cx + dx] = 0.7 + 0.3 * r();
    rows.push(`${label},${img.map((v) => v.toFixed(3)).join(',')}`);
  }
  writeFileSync(file, rows.join('\n'));
}
const train = `csv:${join(dir, 'train.csv')}`;
const test = `csv:${join(dir, 'test.csv')}`;
const goodTeacher = join(dir, 'teacher.onnx');
const badTeacher = join(dir, 'bad-teacher.onnx');
const base = { data: train, test, epochs: 3, batchSize: 32, learningRate: 3e-3, seed: 2, temperature: 20, alpha: 0.9, searchEpochs: 2, patience: 2 } as const;

describe('recipe search on a validation split (8×8 fixture)', () => {
  beforeAll(async () => {
    writeImages(join(dir, 'train.csv'), 400, 1);
    writeImages(join(dir, 'test.csv'), 200, 2);
    await trainTeacher({ data: train, test, arch: 'mlp:64', dropout: 0, inputDropout: 0, epochs: 8, batchSize: 32, learningRate: 3e-3, jitter: 0, seed: 1, out: goodTeacher });
    // A teacher that knows nothing: untrained random weights, confidently wrong soft labels.
    await initBackend();
    const bad = buildModel(parseArch('mlp:16'), { inputSize: 64, classes: 4, seed: 99 });
    bad.setWeights(bad.getWeights().map((w) => tf.mul(w, 8)));
    writeFileSync(badTeacher, exportToOnnx(bad));
    bad.dispose();
  }, 120_000);

  it('searches label training, then every recipe at its learning rate, on validation, and keeps the best', async () => {
    const { report, files } = await runDistill({ ...base, teacher: [goodTeacher], student: 'cnn:4/8', baseline: true, outDir: join(dir, 'good') });
    const search = report.student.training.search!;
    expect(report.settings.recipe).toBe('search');
    expect(search.trials.map((t) => [t.temperature, t.alpha])).toEqual([[1, 0], [2.5, 0.5], [4, 0.5], [4, 0.9], [2.5, 0.9], [20, 0.9]]);
    expect(search.validationCount).toBe(40);
    const best = Math.min(...search.trials.map((t) => t.validationErrors));
    const first = search.trials.find((t) => t.validationErrors === best)!;
    expect(search.chosen).toEqual({ temperature: first.temperature, alpha: first.alpha, learningRate: first.learningRate });
    expect(report.settings).toMatchObject({ temperature: first.temperature, alpha: first.alpha });
    for (const t of search.trials) expect(t.bestEpoch).toBeGreaterThanOrEqual(1);
    // Label training gets as many trials (learning rates), and its winner is the student's alpha-0 candidate.
    const bsearch = report.baseline!.training.search!;
    expect(bsearch.trials).toHaveLength(search.trials.length);
    expect(bsearch.trials.every((t) => t.alpha === 0)).toBe(true);
    expect(search.trials[0]).toEqual(bsearch.trials.find((t) => t.learningRate === bsearch.chosen.learningRate));
    expect(search.trials.slice(1).every((t) => t.learningRate === bsearch.chosen.learningRate)).toBe(true);
    expect(report.baseline!.training.learningRate).toBe(bsearch.chosen.learningRate);
    expect(report.baseline!.training.validationCount).toBe(40);
    // A distilled winner leaves the baseline its own run.
    expect(report.baseline!.training.sameRunAsStudent).toBe(search.chosen.alpha === 0 ? true : undefined);
    // The final runs kept their best validation epoch.
    expect(report.student.training.bestEpoch).toBeGreaterThanOrEqual(1);
    expect(report.student.test.accuracy).toBeGreaterThan(0.6);
    const saved = JSON.parse(readFileSync(files.report, 'utf8'));
    expect(saved.student.training.search.trials).toHaveLength(6);
  }, 300_000);

  it('with a teacher that knows nothing, label training (alpha = 0) wins the search', async () => {
    const { report } = await runDistill({ ...base, teacher: [badTeacher], student: 'mlp:16', baseline: false, outDir: join(dir, 'bad'), recipes: [{ temperature: 1, alpha: 0 }, { temperature: 4, alpha: 0.9 }, { temperature: 2.5, alpha: 1 }] });
    const trials = report.student.training.search!.trials;
    expect(trials[0]!.validationErrors).toBeLessThan(trials[2]!.validationErrors);
    expect(report.settings.alpha).toBe(0);
  }, 300_000);

  it('stops starting trials when the time budget is spent and records the ones it skipped', async () => {
    const { report } = await runDistill({ ...base, teacher: [goodTeacher], student: 'mlp:8', baseline: true, outDir: join(dir, 'budget'), searchMinutes: 0 });
    const search = report.student.training.search!;
    expect(search.trials).toHaveLength(1);
    expect(search.trials[0]!.alpha).toBe(0);
    expect(search.skipped).toHaveLength(5);
    expect(report.baseline!.training.search!.trials).toHaveLength(1);
    expect(report.baseline!.training.search!.skipped).toHaveLength(5);
    // Label training won by default, so the baseline would repeat the student's run (same candidate, data, seed
    // and schedule; before runs were shared, the two trained separately and always matched): one run is both.
    expect(report.baseline!.training.sameRunAsStudent).toBe(true);
    expect(report.baseline!.training.learningRate).toBe(report.student.training.learningRate);
    expect(report.student.test.errors).toBe(report.baseline!.test.errors);
  }, 300_000);

  it('function matching: the student trains on teacher logits computed on the fly', async () => {
    const { report } = await runDistill({ ...base, teacher: [goodTeacher], student: 'mlp:16', epochs: 8, baseline: false, outDir: join(dir, 'fm'), functionMatching: true, jitter: 1, recipe: 'fixed', temperature: 4 });
    expect(report.settings).toMatchObject({ recipe: 'fixed', functionMatching: true, temperature: 4, alpha: 0.9, jitter: 1 });
    expect(report.student.test.accuracy).toBeGreaterThan(0.6);
  }, 300_000);

  it('unlabelled transfer sets keep the fixed teacher-only recipe; asking them to search is a usage error', async () => {
    const { report } = await runDistill({ ...base, data: `unlabeled:${train}`, teacher: [goodTeacher], student: 'mlp:8', baseline: false, outDir: join(dir, 'unl') });
    expect(report.settings.recipe).toBe('fixed');
    expect(report.student.training.search).toBeUndefined();
    await expect(runDistill({ ...base, data: `unlabeled:${train}`, teacher: [goodTeacher], student: 'mlp:8', baseline: false, outDir: join(dir, 'unl2'), recipe: 'search' })).rejects.toThrow(UsageError);
  }, 300_000);
});
