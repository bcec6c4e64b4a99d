import { describe, expect, it } from 'vitest';
import { pairedInterval, shadowFigures, shadowRunInterval, Z95 } from '../../../cloud/shadow/stats.js';
import { describeFigures, shadowIndex, shadowVerdict } from '../../../cloud/shadow/gate.js';
import type { ShadowEvalRow } from '../../../cloud/registry/schema.js';

/** n predictions: the teacher always says 0; `cand`/`run` say 0 (right) or 1 (wrong) per the four cells. */
function cells({ both, candOnly, runOnly, neither }: { both: number; candOnly: number; runOnly: number; neither: number }) {
  const cand: number[] = [];
  const run: number[] = [];
  const push = (k: number, c: number, r: number) => {
    for (let i = 0; i < k; i++) (cand.push(c), run.push(r));
  };
  push(both, 0, 0);
  push(candOnly, 0, 1);
  push(runOnly, 1, 0);
  push(neither, 1, 1);
  return { cand, run, teacher: cand.map(() => 0) };
}

describe('shadow figures (paired, hand-computed)', () => {
  it('n = 100, candidate right where running wrong on 2, the reverse on 10', () => {
    const { cand, run, teacher } = cells({ both: 86, candOnly: 2, runOnly: 10, neither: 2 });
    const f = shadowFigures(cand, run, teacher);
    // By hand: candidate right on 86 + 2 = 88, running on 86 + 10 = 96; they agree on 86 + 2 (both wrong: both say 1) = 88.
    expect(f).toMatchObject({ samples: 100, candidateAccuracy: 0.88, runningAccuracy: 0.96, agreement: 0.88, better: 2, worse: 10 });
    // Δ = (2 − 10) / 100 = −0.08; SE = √(12 − 64/100) / 100 = √11.36 / 100 = 0.0337046; z × SE = 1.95996 × 0.0337046 = 0.0660598.
    expect(f.delta).toBeCloseTo(-0.08, 12);
    expect(f.deltaLow).toBeCloseTo(-0.1460598, 6);
    expect(f.deltaHigh).toBeCloseTo(-0.0139402, 6);
  });

  it('the interval in the formula: Δ ± z·√(b + w − (b − w)²/n)/n, clipped to [−1, 1]', () => {
    // b = 30, w = 10, n = 200: Δ = 0.1, SE = √(40 − 20²/200)/200 = √38/200 = 0.0308221; z × SE = 0.0604101.
    const ci = pairedInterval(30, 10, 200);
    expect(ci.delta).toBeCloseTo(0.1, 12);
    expect(ci.high).toBeCloseTo(0.1604101, 6);
    expect(ci.low).toBeCloseTo(0.0395899, 6);
    expect(ci.high - ci.delta).toBeCloseTo((Z95 * Math.sqrt(38)) / 200, 12);
    // Every sample the candidate gets wrong and the running one right: Δ = −1 with no spread.
    expect(pairedInterval(0, 5, 5)).toEqual({ delta: -1, low: -1, high: -1 });
    // No discordant pair: [0, 0].
    expect(pairedInterval(0, 0, 50)).toEqual({ delta: 0, low: 0, high: 0 });
    const none = pairedInterval(0, 0, 0);
    expect([none.delta, none.low, none.high].every(Number.isNaN)).toBe(true);
  });

  it('without a running release: only the candidate accuracy; mismatched lengths throw', () => {
    expect(shadowFigures([0, 1, 0, 0], null, [0, 0, 0, 0])).toEqual({ samples: 4, candidateAccuracy: 0.75 });
    expect(() => shadowFigures([0, 1], [0], [0, 0])).toThrow(RangeError);
  });
});

function row(p: Partial<ShadowEvalRow>): ShadowEvalRow {
  return {
    id: 1, roundId: 'r', model: 'm', line: null, releaseSeq: null, scope: 'device', deviceId: null, cohort: null, samples: 0, judgedBy: null, runningSeq: 1,
    candidateAccuracy: null, runningAccuracy: null, agreement: null, delta: null, deltaLow: null, deltaHigh: null, createdAt: '', ...p,
  };
}

describe('agreement gate verdict', () => {
  const rows = [
    row({ scope: 'cohort', samples: 130, delta: -0.02, deltaLow: -0.05, deltaHigh: 0.01, runningSeq: null }),
    row({ deviceId: 'worse', samples: 100, judgedBy: 'device', candidateAccuracy: 0.88, runningAccuracy: 0.96, agreement: 0.88, delta: -0.08, deltaLow: -0.146, deltaHigh: -0.0139 }),
    row({ deviceId: 'fine', samples: 60, judgedBy: 'device', delta: 0, deltaLow: 0, deltaHigh: 0 }),
    row({ deviceId: 'small', samples: 10, judgedBy: 'cohort', delta: -0.5, deltaLow: -0.9, deltaHigh: -0.1 }),
    row({ deviceId: 'lonely', samples: 10, judgedBy: 'none' }),
  ];
  const idx = shadowIndex(rows);

  it('holds a device whose own upper bound is below −margin, with its figures in the reason', () => {
    const v = shadowVerdict(idx, 'worse', 0.01, 1);
    expect(v).toMatchObject({ hold: true, evidence: 'device' });
    expect(v.reason).toContain('−1.4 pts < −1.0');
    expect(v.reason).toContain('candidate 88.0% vs running #1 96.0%');
    // The margin is configurable: at 2 points the same figures pass.
    expect(shadowVerdict(idx, 'worse', 0.02, 1)).toMatchObject({ hold: false, evidence: 'device' });
  });

  it('a device with few samples is judged by its cohort (which passes here, although its own figures look bad)', () => {
    expect(shadowVerdict(idx, 'small', 0.01, 1)).toMatchObject({ hold: false, evidence: 'cohort' });
    expect(shadowVerdict(idx, 'fine', 0.01, 1)).toMatchObject({ hold: false, evidence: 'device' });
  });

  it('no evidence: too few samples everywhere, a device not evaluated, another running release, no evaluation at all', () => {
    expect(shadowVerdict(idx, 'lonely', 0.01, 1)).toMatchObject({ hold: false, evidence: 'none' });
    expect(shadowVerdict(idx, 'new-device', 0.01, 1).reason).toMatch(/^no evidence: the round did not evaluate/);
    expect(shadowVerdict(idx, 'worse', 0.01, 7)).toMatchObject({ hold: false, evidence: 'none', reason: 'no evidence: evaluated against release #1, the device now runs #7' });
    expect(shadowVerdict(shadowIndex([]), 'worse', 0.01, 1)).toMatchObject({ hold: false, evidence: 'none', reason: expect.stringMatching(/no shadow evaluation \(uploaded, re-issued/) });
  });

  it('describes figures with signs and the interval', () => {
    expect(describeFigures(rows[1]!, 'device worse')).toBe('−8.0 pts (95% CI −14.6 … −1.4), candidate 88.0% vs running #1 96.0%, agreement 88.0%, 100 audit samples of device worse');
  });
});

describe('shadow run interval (teacher-labelled disagreements)', () => {
  it('every disagreement labelled: the paired interval over all shadowed requests, agreements as ties', () => {
    // N = 100, D = 20, all labelled, w = 20: Δ = −0.2; SE = √(20 − 4)/100 = 0.04.
    expect(shadowRunInterval(100, 20, 0, 20, 20)).toEqual(pairedInterval(0, 20, 100));
    expect(shadowRunInterval(100, 20, 0, 20, 20).high).toBeCloseTo(-0.2 + Z95 * 0.04, 12);
  });

  it('a sample of the disagreements: the known disagreement rate times the interval on the sample', () => {
    // N = 200, D = 100, m = 20 labelled, w = 10: on the sample Δd = −0.5, SE = √(10 − 100/20)/20 = 0.111803;
    // rate 0.5: Δ = −0.25, interval 0.5 × (−0.5 ± 1.96 × 0.111803) = [−0.359570, −0.140430].
    const i = shadowRunInterval(200, 100, 0, 10, 20);
    expect(i.delta).toBeCloseTo(-0.25, 12);
    expect(i.low).toBeCloseTo(-0.35957, 5);
    expect(i.high).toBeCloseTo(-0.14043, 5);
  });

  it('no disagreement is Δ = 0 exactly; nothing shadowed, or disagreements with none labelled, is NaN', () => {
    expect(shadowRunInterval(50, 0, 0, 0, 0)).toEqual({ delta: 0, low: 0, high: 0 });
    expect(shadowRunInterval(0, 0, 0, 0, 0).delta).toBeNaN();
    expect(shadowRunInterval(50, 5, 0, 0, 0).high).toBeNaN();
  });
});
