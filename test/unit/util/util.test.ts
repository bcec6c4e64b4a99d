import { describe, expect, it } from 'vitest';
import { mapLimit } from '../../../shared/util/map-limit.js';
import { percentile, percentileOfSorted } from '../../../shared/util/percentile.js';

describe('percentile (nearest rank)', () => {
  it('picks the smallest value with p% at or below it', () => {
    const v = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentileOfSorted(v, 50)).toBe(50);
    expect(percentileOfSorted(v, 95)).toBe(95);
    expect(percentileOfSorted(v, 100)).toBe(100);
    expect(percentileOfSorted(v, 0)).toBe(1);
    expect(percentile([5, 1, 4, 2, 3], 50)).toBe(3);
    expect(percentileOfSorted([7], 99)).toBe(7);
  });

  it('is NaN for no samples rather than a made-up number', () => {
    expect(percentileOfSorted([], 50)).toBeNaN();
  });
});

describe('mapLimit', () => {
  it('keeps at most `limit` calls pending and visits every item once with its index', async () => {
    let pending = 0;
    let peak = 0;
    const seen: number[] = [];
    await mapLimit([10, 11, 12, 13, 14, 15, 16], 3, async (x, i) => {
      pending++;
      peak = Math.max(peak, pending);
      await new Promise((r) => setImmediate(r));
      seen.push(x - i);
      pending--;
    });
    expect(peak).toBe(3);
    expect(seen).toEqual([10, 10, 10, 10, 10, 10, 10]);
  });

  it('rejects with the first error', async () => {
    await expect(mapLimit([1, 2, 3], 2, async (x) => { if (x === 2) throw new Error('item 2'); })).rejects.toThrow('item 2');
  });
});
