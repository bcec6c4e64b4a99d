import { describe, expect, it } from 'vitest';
import { gate } from '../../../cloud/rounds/gate.js';
import { hardRepeatFactor, mixTransferSet } from '../../../cloud/rounds/mix.js';

describe('gate', () => {
  it('passes a first release and one within tolerance of its parent', () => {
    expect(gate({ holdoutAccuracy: 0.9, tolerance: 0.01 })).toEqual({ pass: true, reason: 'first release (holdout accuracy 0.9)' });
    expect(gate({ holdoutAccuracy: 0.946, parentHoldoutAccuracy: 0.955, parentSeq: 4, tolerance: 0.01 }).pass).toBe(true);
    expect(gate({ holdoutAccuracy: 0.96, parentHoldoutAccuracy: 0.955, tolerance: 0 }).pass).toBe(true);
  });

  it('rejects a regression beyond the tolerance, with the numbers in the reason', () => {
    expect(gate({ holdoutAccuracy: 0.912, parentHoldoutAccuracy: 0.955, tolerance: 0.01 })).toEqual({ pass: false, reason: 'holdout accuracy 0.912 < parent 0.955 − tolerance 0.01' });
    expect(gate({ holdoutAccuracy: 0.944, parentHoldoutAccuracy: 0.955, parentSeq: 3, tolerance: 0.01 }).reason).toBe('holdout accuracy 0.944 < parent #3 0.955 − tolerance 0.01');
  });

  it('treats a negative tolerance as a required improvement, and applies the floor and NaN checks', () => {
    expect(gate({ holdoutAccuracy: 0.96, parentHoldoutAccuracy: 0.955, tolerance: -0.01 }).pass).toBe(false);
    expect(gate({ holdoutAccuracy: 0.97, parentHoldoutAccuracy: 0.955, tolerance: -0.01 }).pass).toBe(true);
    expect(gate({ holdoutAccuracy: 0.5, tolerance: 0.01, minHoldoutAccuracy: 0.8 })).toEqual({ pass: false, reason: 'holdout accuracy 0.5 < minimum 0.8' });
    expect(gate({ holdoutAccuracy: NaN, tolerance: 0.01 }).pass).toBe(false);
    expect(gate({ holdoutAccuracy: 0.9, parentSeq: 2, tolerance: 0.01 }).reason).toBe('parent #2 has no comparable holdout accuracy (holdout accuracy 0.9)');
  });
});

describe('hard-example mixing', () => {
  const part = (count: number, inputSize: number, classes: number, value: number, labels?: number[]) => ({
    count,
    features: new Float32Array(count * inputSize).fill(value),
    teacherLogits: new Float32Array(count * classes).fill(value),
    ...(labels ? { labels: Int32Array.from(labels) } : {}),
  });

  it('repeats hard examples until they are at least the target share, within the cap', () => {
    expect(hardRepeatFactor(1000, 10, 0.2, 100)).toBe(25); // 250 / 1250 = 20 %
    expect(hardRepeatFactor(1000, 10, 0.2, 5)).toBe(5); // capped
    expect(hardRepeatFactor(1000, 500, 0.2, 20)).toBe(1); // already enough
    expect(hardRepeatFactor(1000, 10, 0, 20)).toBe(1); // always at least once
    expect(hardRepeatFactor(1000, 0, 0.2, 20)).toBe(0);
  });

  it('builds a train set with base labels, −1 for unlabelled hard examples, and teacher logits for all', () => {
    const base = part(8, 2, 3, 1, [0, 1, 2, 0, 1, 2, 0, 1]);
    const hard = part(2, 2, 3, 5, [-1, 2]);
    const { set, stats } = mixTransferSet(base, hard, { inputSize: 2, classes: 3, share: 0.5, maxRepeat: 10 });
    expect(stats).toEqual({ baseCount: 8, hardCount: 2, hardRepeat: 4, hardShare: 0.5, transferCount: 16 });
    expect(set.count).toBe(16);
    expect(Array.from(set.labels!.subarray(8))).toEqual([-1, 2, -1, 2, -1, 2, -1, 2]);
    expect(set.features.filter((v) => v === 5)).toHaveLength(16);
    expect(set.teacherLogits!.length).toBe(48);
    expect(set.teacherLogits!.filter((v) => v === 5)).toHaveLength(24);
  });

  it('drops labels entirely when nothing is labelled (soft term only)', () => {
    const { set, stats } = mixTransferSet(part(4, 1, 2, 0), part(1, 1, 2, 1, [-1]), { inputSize: 1, classes: 2, share: 0.2, maxRepeat: 20 });
    expect(set.labels).toBeUndefined();
    expect(stats.hardRepeat).toBe(1);
    expect(() => mixTransferSet(part(4, 1, 2, 0), { ...part(1, 1, 2, 1), teacherLogits: new Float32Array(3) }, { inputSize: 1, classes: 2, share: 0.2, maxRepeat: 20 })).toThrow(/hard teacher logits/);
  });
});
