import { describe, expect, it } from 'vitest';
import { RecentPredictions } from '../../../edge/api/recent.js';
import { denseModel, makeManifest } from '../../fixtures/onnx-models.js';

const manifest = makeManifest(denseModel({ sizes: [4, 2] }));
const entry = (v: number, width = 4, at = 0) => ({ input: new Float32Array(width).fill(v), probs: new Float32Array([v, 1 - v]), manifest, at });

describe('RecentPredictions', () => {
  it('returns copies and evicts the oldest past maxEntries', () => {
    const r = new RecentPredictions({ maxEntries: 3, clock: () => 0 });
    for (let i = 0; i < 5; i++) r.remember(`id${i}`, entry(i / 10));
    expect(r.size).toBe(3);
    expect(r.get('id0')).toBeUndefined();
    expect(r.get('id1')).toBeUndefined();
    const e = r.get('id4')!;
    expect(Array.from(e.input)).toEqual(Array(4).fill(Math.fround(0.4)));
    e.input[0] = 99;
    expect(r.get('id4')!.input[0]).toBeCloseTo(0.4);
    expect(r.get('id2')!.probs[1]).toBeCloseTo(0.8);
  });

  it('bounds bytes, expires by age and starts afresh for another input width', () => {
    let now = 0;
    const r = new RecentPredictions({ maxEntries: 100, maxBytes: 2 * (4 + 2) * 4, ttlMs: 10, clock: () => now });
    r.remember('a', entry(0.1));
    r.remember('b', entry(0.2));
    r.remember('c', entry(0.3));
    expect(r.size).toBe(2);
    expect(r.get('a')).toBeUndefined();
    now = 11;
    expect(r.get('b')).toBeUndefined();
    r.remember('w', entry(0.5, 8, now));
    expect(r.get('c')).toBeUndefined();
    expect(r.get('w')!.input).toHaveLength(8);
    const off = new RecentPredictions({ maxEntries: 0 });
    off.remember('x', entry(0.1));
    expect(off.get('x')).toBeUndefined();
  });

  it('re-remembering an id keeps one entry', () => {
    const r = new RecentPredictions({ maxEntries: 2, clock: () => 0 });
    r.remember('a', entry(0.1));
    r.remember('a', entry(0.2));
    r.remember('b', entry(0.3));
    expect(r.size).toBe(2);
    expect(r.get('a')!.probs[0]).toBeCloseTo(0.2);
  });
});
