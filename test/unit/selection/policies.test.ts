import { describe, expect, it } from 'vitest';
import { DEFAULT_SELECTION_CONFIG, scoreOutput, selectionConfigSchema, uncertaintyReason } from '../../../edge/selection/index.js';

const f32 = (...v: number[]) => new Float32Array(v);

describe('scoreOutput', () => {
  it('computes max probability, top-2 margin and entropy in nats and normalised', () => {
    const s = scoreOutput(f32(0.7, 0.2, 0.1))!;
    expect(s.maxProb).toBeCloseTo(0.7, 6);
    expect(s.margin).toBeCloseTo(0.5, 6);
    const h = -(0.7 * Math.log(0.7) + 0.2 * Math.log(0.2) + 0.1 * Math.log(0.1));
    expect(s.entropyNats).toBeCloseTo(h, 5);
    expect(s.entropyNormalized).toBeCloseTo(h / Math.log(3), 5);
  });

  it('gives 0 entropy for one-hot, 1 normalised for uniform, and treats 0·ln0 as 0', () => {
    expect(scoreOutput(f32(0, 1, 0, 0))!.entropyNats).toBe(0);
    const u = scoreOutput(f32(0.25, 0.25, 0.25, 0.25))!;
    expect(u.entropyNormalized).toBeCloseTo(1, 6);
    expect(u.entropyNats).toBeCloseTo(Math.log(4), 6);
    expect(u.margin).toBe(0);
  });

  it('finds the top two wherever they are', () => {
    expect(scoreOutput(f32(0.1, 0.3, 0.05, 0.55))!.margin).toBeCloseTo(0.25, 6);
    expect(scoreOutput(f32(0.4, 0.4, 0.2))!.margin).toBe(0);
  });

  it('refuses empty, NaN, infinite and negative outputs', () => {
    expect(scoreOutput(f32())).toBeUndefined();
    expect(scoreOutput(f32(0.5, Number.NaN))).toBeUndefined();
    expect(scoreOutput(f32(Infinity, 0))).toBeUndefined();
    expect(scoreOutput(f32(1.2, -0.2))).toBeUndefined();
  });
});

describe('uncertaintyReason', () => {
  const cfg = selectionConfigSchema.parse({
    lowConfidence: { threshold: 0.6 },
    lowMargin: { threshold: 0.2 },
    highEntropy: { threshold: 0.5, unit: 'normalized' },
  });

  it('low_confidence when max probability is below the threshold', () => {
    expect(uncertaintyReason(scoreOutput(f32(0.55, 0.05, 0.4))!, cfg)).toBe('low_confidence');
  });

  it('low_margin when top-1 minus top-2 is below the threshold (and confidence is fine)', () => {
    // With a 0.6 confidence floor the margin cannot be < 0.2 (it would need p2 > 0.4), so lower the floor.
    const c = { ...cfg, lowConfidence: { enabled: true, threshold: 0.5 } };
    expect(uncertaintyReason(scoreOutput(f32(0.55, 0.45, 0))!, c)).toBe('low_margin');
  });

  it('high_entropy when normalised entropy is above the threshold', () => {
    // max 0.7, margin 0.64 (neither of the others fires) but mass spread over 10 classes.
    const p = f32(0.7, 0.06, 0.03, 0.03, 0.03, 0.03, 0.03, 0.03, 0.03, 0.03);
    const s = scoreOutput(p)!;
    expect(s.entropyNormalized).toBeGreaterThan(0.5);
    expect(uncertaintyReason(s, cfg)).toBe('high_entropy');
  });

  it('high_entropy in nats compares raw entropy', () => {
    const s = scoreOutput(f32(0.7, 0.06, 0.03, 0.03, 0.03, 0.03, 0.03, 0.03, 0.03, 0.03))!;
    const nats = selectionConfigSchema.parse({ lowConfidence: { enabled: false }, lowMargin: { enabled: false }, highEntropy: { unit: 'nats', threshold: s.entropyNats - 0.01 } });
    expect(uncertaintyReason(s, nats)).toBe('high_entropy');
    const higher = selectionConfigSchema.parse({ ...nats, highEntropy: { unit: 'nats', threshold: s.entropyNats + 0.01 } });
    expect(uncertaintyReason(s, higher)).toBeNull();
  });

  it('confident outputs have no reason', () => {
    expect(uncertaintyReason(scoreOutput(f32(0.97, 0.02, 0.01))!, cfg)).toBeNull();
  });

  it('precedence is low_confidence, then low_margin, then high_entropy', () => {
    const s = scoreOutput(f32(0.34, 0.33, 0.33))!; // all three fire
    expect(uncertaintyReason(s, cfg)).toBe('low_confidence');
    expect(uncertaintyReason(s, { ...cfg, lowConfidence: { enabled: false, threshold: 0.6 } })).toBe('low_margin');
    expect(uncertaintyReason(s, { ...cfg, lowConfidence: { enabled: false, threshold: 0.6 }, lowMargin: { enabled: false, threshold: 0.2 } })).toBe('high_entropy');
  });

  it('disabled policies never fire', () => {
    const off = selectionConfigSchema.parse({ lowConfidence: { enabled: false }, lowMargin: { enabled: false }, highEntropy: { enabled: false } });
    expect(uncertaintyReason(scoreOutput(f32(0.34, 0.33, 0.33))!, off)).toBeNull();
  });
});

describe('selectionConfigSchema', () => {
  it('fills every default from {}', () => {
    expect(DEFAULT_SELECTION_CONFIG).toEqual({
      lowConfidence: { enabled: true, threshold: 0.6 },
      lowMargin: { enabled: true, threshold: 0.15 },
      highEntropy: { enabled: true, threshold: 0.5, unit: 'normalized' },
      audit: { rate: 0.01 },
      caps: { perMinute: 30, perHour: 600 },
      dedupe: { enabled: true, windowMs: 3_600_000, maxEntries: 10_000, algorithm: 'sha1' },
    });
  });

  it('rejects unknown keys and out-of-range values with paths', () => {
    const r = selectionConfigSchema.safeParse({ lowConfidence: { threshold: 1.5 }, audit: { rate: 0.1, extra: 1 }, highEntropy: { threshold: 2 } });
    expect(r.success).toBe(false);
    const paths = r.error!.issues.map((i) => i.path.join('.'));
    expect(paths).toEqual(expect.arrayContaining(['lowConfidence.threshold', 'audit', 'highEntropy.threshold']));
  });
});
