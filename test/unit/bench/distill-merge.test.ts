import { describe, expect, it } from 'vitest';
import type { DistillReport } from '../../../cloud/distill/pipeline.js';
import { mergeResults, type DistillResultPart } from '../../bench/distill-merge.js';

/** The fields of a report the summary reads; the rest of a real report is not needed here. */
const report = (seed: number, baseline: number, distilled: number): DistillReport =>
  ({
    settings: { seed, temperature: 4, alpha: 0.5 },
    baseline: { test: { errors: baseline, count: 10_000 } },
    student: {
      params: 26_698, bytes: { fp32: 1, int8: 1 }, test: { errors: distilled, count: 10_000 }, int8Test: { errors: distilled + 1, count: 10_000 },
      latency: { fp32: { p50Ms: 0.02 }, int8: { p50Ms: 0.03 } }, training: { learningRate: 0.003, samplesPerSec: 100, gflops: 1, seconds: 10 },
    },
  }) as unknown as DistillReport;

const part = (seeds: number[], o: { sha?: string; notMeasured?: number[]; seconds?: number } = {}): DistillResultPart => ({
  backend: { name: 'wasm' }, complete: !o.notMeasured?.length, loadedMachine: false, loadavgBefore: [1], loadavgAfter: [2],
  budget: { minutes: 60, seeds, plans: [], teacherSeconds: 0 },
  notMeasured: (o.notMeasured ?? []).map((seed) => ({ student: 'cnn:8,16/32', seed, reason: 'budget', projectedSeconds: 1 })),
  teacher: { sha256: o.sha ?? 'a'.repeat(64), testErrors: 70 }, seconds: o.seconds ?? 100,
  reports: { 'cnn:8,16/32': seeds.map((s) => report(s, 100 + s, 90 + s)) },
});

describe('distill bench merge', () => {
  it('joins seeds run in separate processes into one row, sorted by seed, with the targets recomputed', () => {
    const m = mergeResults([{ name: 'b.json', result: part([3], { seconds: 300 }) }, { name: 'a.json', result: part([1, 2], { notMeasured: [3], seconds: 200 }) }]);
    expect(m.students).toHaveLength(1);
    expect(m.students[0]!.seeds).toEqual([1, 2, 3]);
    expect(m.students[0]!.labelsOnly.perSeed).toEqual([101, 102, 103]);
    expect(m.students[0]!.distilled.mean).toBe(92);
    // Seed 3 was left out by one part but run by the other: measured.
    expect(m.notMeasured).toEqual([]);
    expect(m.complete).toBe(true);
    expect(m.seconds).toBe(300);
    expect(m.targets.distilledAtLeastLabelsOnly).toEqual({ 'cnn:8,16/32': true });
    expect(m.summary).toContain('cnn:8,16/32 (26698 params, 3 seeds) labels-only 102.0 ± 1.0 vs distilled 92.0 ± 1.0');
  });

  it('keeps the seeds a part left out for its budget as not measured, and takes the teacher score from a part that has one', () => {
    const skipped: DistillResultPart = { ...part([]), reports: {}, teacher: { sha256: 'a'.repeat(64) }, notMeasured: [{ student: 'mlp:800,800', seed: 1, reason: 'budget', projectedSeconds: 900 }] };
    const m = mergeResults([{ name: 'skipped', result: skipped }, { name: 'a', result: part([1]) }]);
    expect(m.teacher.testErrors).toBe(70);
    expect(m.complete).toBe(false);
    expect(m.targets.notMeasured).toEqual([{ student: 'mlp:800,800', seeds: [1] }]);
    expect(m.summary).toContain('not measured (budget): mlp:800,800 seeds 1');
  });

  it('refuses parts with different teachers, a seed present twice, or no parts', () => {
    expect(() => mergeResults([{ name: 'a', result: part([1]) }, { name: 'b', result: part([2], { sha: 'b'.repeat(64) }) }])).toThrow(/b used teacher bbbbbbbbbbbb/);
    expect(() => mergeResults([{ name: 'a', result: part([1]) }, { name: 'b', result: part([1]) }])).toThrow(/seed 1 appears in more than one part/);
    expect(() => mergeResults([])).toThrow(/no parts/);
  });
});
