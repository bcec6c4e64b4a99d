import { describe, expect, it } from 'vitest';
import { UsageError } from '../../../shared/cli/errors.js';
import {
  DatasetError,
  applyLoadOptions,
  concatDatasets,
  exampleSize,
  mulberry32,
  permutation,
  shuffle,
  splitHoldout,
  subset,
  withoutLabels,
} from '../../../shared/data/index.js';
import { ids, toyDataset } from './helpers.js';

describe('DatasetError', () => {
  it('is a UsageError (CLI exit 2) and names the file', () => {
    const e = new DatasetError('empty file', '/x/y.csv');
    expect(e).toBeInstanceOf(UsageError);
    expect(e.name).toBe('DatasetError');
    expect(e.message).toBe('/x/y.csv: empty file');
    expect(e.file).toBe('/x/y.csv');
  });
});

describe('mulberry32 / permutation', () => {
  it('is deterministic per seed and in [0, 1)', () => {
    const a = mulberry32(42);
    const b = mulberry32(42);
    for (let i = 0; i < 100; i++) {
      const x = a();
      expect(x).toBe(b());
      expect(x).toBeGreaterThanOrEqual(0);
      expect(x).toBeLessThan(1);
    }
  });

  it('produces a permutation that depends on the seed', () => {
    const p = permutation(100, 7);
    expect([...p].sort((x, y) => x - y)).toEqual([...Array(100).keys()]);
    expect([...permutation(100, 7)]).toEqual([...p]);
    expect([...permutation(100, 8)]).not.toEqual([...p]);
    expect(() => permutation(5, 1.5)).toThrow(DatasetError);
  });
});

describe('helpers', () => {
  it('exampleSize multiplies the shape', () => {
    expect(exampleSize({ shape: [28, 28, 1] })).toBe(784);
    expect(exampleSize({ shape: [784] })).toBe(784);
  });

  it('subset copies the chosen examples in order', () => {
    const s = subset(toyDataset(10), [3, 1, 3]);
    expect(s.count).toBe(3);
    expect([...s.features]).toEqual([3, 3.5, 1, 1.5, 3, 3.5]);
    expect([...s.labels!]).toEqual([0, 1, 0]);
    expect(s.numClasses).toBe(3);
    expect(s.labelNames).toEqual(['a', 'b', 'c']);
    expect(() => subset(toyDataset(3), [3])).toThrow(RangeError);
  });

  it('shuffle is deterministic with a seed and keeps feature/label pairs together', () => {
    const ds = toyDataset(50);
    const a = shuffle(ds, 123);
    expect(ids(a)).toEqual(ids(shuffle(ds, 123)));
    expect(ids(a)).not.toEqual(ids(ds));
    expect(ids(a).sort((x, y) => x - y)).toEqual(ids(ds));
    for (let i = 0; i < a.count; i++) expect(a.labels![i]).toBe(a.features[2 * i]! % 3);
  });

  it('applyLoadOptions: limit takes the first N, after shuffling when seeded', () => {
    const ds = toyDataset(20);
    expect(ids(applyLoadOptions(ds, { limit: 5 }))).toEqual([0, 1, 2, 3, 4]);
    expect(applyLoadOptions(ds, { limit: 500 }).count).toBe(20);
    expect(applyLoadOptions(ds, {})).toBe(ds);
    const shuffled = shuffle(ds, 9);
    expect(ids(applyLoadOptions(ds, { limit: 5, shuffleSeed: 9 }))).toEqual(ids(shuffled).slice(0, 5));
    expect(() => applyLoadOptions(ds, { limit: -1 })).toThrow(DatasetError);
    expect(() => applyLoadOptions(ds, { limit: 2.5 })).toThrow(DatasetError);
  });

  it('withoutLabels drops labels and label metadata', () => {
    const u = withoutLabels(toyDataset(4));
    expect(u.labels).toBeUndefined();
    expect(u.labelNames).toBeUndefined();
    expect(u.numClasses).toBeUndefined();
    expect(u.count).toBe(4);
  });
});

describe('splitHoldout', () => {
  const ds = toyDataset(100);

  it.each([
    [0.2, 20],
    [0.25, 25],
    [10, 10],
    [1, 1],
    [0, 0],
  ])('amount %s gives %s holdout examples, disjoint and covering', (amount, expected) => {
    const { train, holdout } = splitHoldout(ds, amount, 5);
    expect(holdout.count).toBe(expected);
    expect(train.count).toBe(100 - expected);
    const all = [...ids(train), ...ids(holdout)];
    expect(new Set(all).size).toBe(100);
    expect(all.sort((x, y) => x - y)).toEqual(ids(ds));
    // Both parts keep the original order.
    expect(ids(train)).toEqual([...ids(train)].sort((x, y) => x - y));
  });

  it('is deterministic per seed', () => {
    expect(ids(splitHoldout(ds, 0.1, 3).holdout)).toEqual(ids(splitHoldout(ds, 0.1, 3).holdout));
    expect(ids(splitHoldout(ds, 0.1, 3).holdout)).not.toEqual(ids(splitHoldout(ds, 0.1, 4).holdout));
  });

  it('rejects bad amounts', () => {
    expect(() => splitHoldout(ds, 101, 1)).toThrow(/exceeds/);
    expect(() => splitHoldout(ds, -0.5, 1)).toThrow(DatasetError);
    expect(() => splitHoldout(ds, 1.5, 1)).toThrow(DatasetError);
  });
});

describe('concatDatasets', () => {
  it('appends examples and labels', () => {
    const c = concatDatasets(toyDataset(3), toyDataset(2));
    expect(c.count).toBe(5);
    expect(ids(c)).toEqual([0, 1, 2, 0, 1]);
    expect([...c.labels!]).toEqual([0, 1, 2, 0, 1]);
    expect(c.source).toBe('toy+toy');
    expect(c.numClasses).toBe(3);
  });

  it('rejects mismatched shapes, scalings and labelling', () => {
    const other = { ...toyDataset(2), shape: [1, 2] };
    expect(() => concatDatasets(toyDataset(2), other)).toThrow(/shapes \[2\] and \[1,2\] differ/);
    expect(() => concatDatasets(toyDataset(2), { ...toyDataset(2), scaling: { scale: 2, offset: 0 } })).toThrow(/scalings/);
    expect(() => concatDatasets(toyDataset(2), withoutLabels(toyDataset(2)))).toThrow(/labels/);
    const u = concatDatasets(withoutLabels(toyDataset(2)), withoutLabels(toyDataset(2)));
    expect(u.labels).toBeUndefined();
  });
});
