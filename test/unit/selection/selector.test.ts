import { describe, expect, it } from 'vitest';
import { DedupeWindow, SlidingWindowCap, createSelector, type SelectionConfigInput } from '../../../edge/selection/index.js';

const f32 = (...v: number[]) => new Float32Array(v);
const CONFIDENT = f32(0.98, 0.01, 0.01);
const UNSURE = f32(0.4, 0.35, 0.25); // low_confidence
let seq = 0;
/** A distinct input each call (dedupe must not interfere unless a test wants it to). */
const fresh = () => f32(seq++, 1, 2, 3);

/** A clock the test moves by hand. */
function fakeClock(start = 1_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

/** Policies only: no audit, no caps, no dedupe. */
const BARE: SelectionConfigInput = { audit: { rate: 0 }, caps: { perMinute: null, perHour: null }, dedupe: { enabled: false } };

describe('createSelector: reasons', () => {
  it('selects each reason and ignores confident outputs', () => {
    const s = createSelector({ ...BARE, lowConfidence: { threshold: 0.5 }, lowMargin: { threshold: 0.2 }, highEntropy: { threshold: 0.5 } }, { random: () => 0.99 });
    expect(s.select({ input: fresh(), probs: CONFIDENT })).toBeNull();
    expect(s.select({ input: fresh(), probs: f32(0.45, 0.3, 0.25) })).toEqual({ reason: 'low_confidence' });
    expect(s.select({ input: fresh(), probs: f32(0.55, 0.44, 0.01) })).toEqual({ reason: 'low_margin' });
    expect(s.select({ input: fresh(), probs: f32(0.7, ...Array<number>(9).fill(0.3 / 9)) })).toEqual({ reason: 'high_entropy' });
    const c = s.counters();
    expect(c.evaluated).toBe(4);
    expect(c.selected).toEqual({ low_confidence: 1, low_margin: 1, high_entropy: 1, audit: 0, shadow_disagreement: 0 });
  });

  it('audit samples confident traffic at the configured rate, using the injected RNG', () => {
    const draws = [0.005, 0.5, 0.009, 0.01, 0.2];
    const s = createSelector({ ...BARE, audit: { rate: 0.01 } }, { random: () => draws.shift()! });
    const got = Array.from({ length: 5 }, () => s.select({ input: fresh(), probs: CONFIDENT })?.reason ?? null);
    expect(got).toEqual(['audit', null, 'audit', null, null]);
    expect(s.counters().selected.audit).toBe(2);
  });

  it('audit rate is roughly honoured over many calls (seeded RNG)', () => {
    let x = 42;
    const lcg = () => ((x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const s = createSelector({ ...BARE, audit: { rate: 0.05 } }, { random: lcg });
    let n = 0;
    for (let i = 0; i < 4000; i++) if (s.select({ input: fresh(), probs: CONFIDENT })) n++;
    expect(n).toBeGreaterThan(140);
    expect(n).toBeLessThan(260);
  });

  it('an uncertainty reason wins over an audit draw; the RNG is drawn on every scored call', () => {
    let calls = 0;
    const s = createSelector({ ...BARE, audit: { rate: 1 } }, { random: () => (calls++, 0) });
    expect(s.select({ input: fresh(), probs: UNSURE })).toEqual({ reason: 'low_confidence' });
    expect(s.select({ input: fresh(), probs: CONFIDENT })).toEqual({ reason: 'audit' });
    expect(calls).toBe(2);
  });

  it('invalid outputs are counted and never selected', () => {
    const s = createSelector({ ...BARE, audit: { rate: 1 } }, { random: () => 0 });
    expect(s.select({ input: fresh(), probs: f32(Number.NaN, 0.5) })).toBeNull();
    expect(s.counters().invalid).toBe(1);
  });

  it('counters() returns a snapshot', () => {
    const s = createSelector(BARE);
    const before = s.counters();
    s.select({ input: fresh(), probs: UNSURE });
    expect(before.selected.low_confidence).toBe(0);
    expect(s.counters().selected.low_confidence).toBe(1);
  });
});

describe('createSelector: caps (fake clock)', () => {
  it('per-minute cap is a sliding window', () => {
    const clock = fakeClock();
    const s = createSelector({ ...BARE, caps: { perMinute: 3, perHour: null } }, { now: clock.now });
    const pick = () => s.select({ input: fresh(), probs: UNSURE });
    expect([pick(), pick(), pick()].every(Boolean)).toBe(true); // t=0
    expect(pick()).toBeNull();
    clock.advance(30_000);
    expect(pick()).toBeNull(); // still 3 in the last minute
    clock.advance(29_999);
    expect(pick()).toBeNull();
    clock.advance(1); // the t=0 ones leave the window
    expect([pick(), pick(), pick()].every(Boolean)).toBe(true);
    expect(pick()).toBeNull();
    expect(s.counters().capped.low_confidence).toBe(4);
    expect(s.counters().selected.low_confidence).toBe(6);
  });

  it('per-hour cap holds across minutes, and a refusal by one cap charges neither', () => {
    const clock = fakeClock();
    const s = createSelector({ ...BARE, caps: { perMinute: 2, perHour: 5 } }, { now: clock.now });
    const pick = () => s.select({ input: fresh(), probs: UNSURE }) !== null;
    const log: boolean[] = [];
    for (let minute = 0; minute < 4; minute++) {
      log.push(pick(), pick(), pick()); // third in each minute hits the minute cap
      clock.advance(60_000);
    }
    expect(log).toEqual([true, true, false, true, true, false, true, false, false, false, false, false]);
    clock.advance(3_600_000);
    expect(pick()).toBe(true);
    const c = s.counters();
    expect(c.selected.low_confidence).toBe(6);
    expect(c.capped.low_confidence).toBe(7);
  });

  it('a cap of 0 selects nothing; null means uncapped', () => {
    const zero = createSelector({ ...BARE, caps: { perMinute: 0, perHour: null } });
    expect(zero.select({ input: fresh(), probs: UNSURE })).toBeNull();
    const open = createSelector({ ...BARE, caps: { perMinute: null, perHour: null } });
    for (let i = 0; i < 1000; i++) expect(open.select({ input: fresh(), probs: UNSURE })).not.toBeNull();
  });
});

describe('createSelector: dedupe (fake clock)', () => {
  const cfg: SelectionConfigInput = { ...BARE, dedupe: { enabled: true, windowMs: 10_000, maxEntries: 100 } };

  it('drops an identical input within the window and accepts it after', () => {
    const clock = fakeClock();
    const s = createSelector(cfg, { now: clock.now });
    const x = f32(1, 2, 3, 4);
    expect(s.select({ input: x, probs: UNSURE })).not.toBeNull();
    clock.advance(9_999);
    expect(s.select({ input: f32(1, 2, 3, 4), probs: UNSURE })).toBeNull();
    expect(s.counters().duplicate.low_confidence).toBe(1);
    clock.advance(1);
    expect(s.select({ input: x, probs: UNSURE })).not.toBeNull();
  });

  it('hashes the bytes of the view, not the whole backing buffer', () => {
    const s = createSelector(cfg, { now: fakeClock().now });
    const buf = new Float32Array([9, 1, 2, 3, 8]);
    expect(s.select({ input: buf.subarray(1, 4), probs: UNSURE })).not.toBeNull();
    expect(s.select({ input: f32(1, 2, 3), probs: UNSURE })).toBeNull();
    expect(s.select({ input: f32(1, 2, 3.0001), probs: UNSURE })).not.toBeNull();
  });

  it('memory is bounded by maxEntries (oldest forgotten first)', () => {
    const w = new DedupeWindow(1e9, 3, 'sha256');
    for (let i = 0; i < 10; i++) w.add(w.hash(f32(i)), i);
    expect(w.size).toBe(3);
    expect(w.has(w.hash(f32(9)), 10)).toBe(true);
    expect(w.has(w.hash(f32(0)), 10)).toBe(false);
  });
});

describe('createSelector: combination order dedupe → caps → selected', () => {
  it('a duplicate is counted as duplicate, never consumes cap budget', () => {
    const clock = fakeClock();
    const s = createSelector({ ...BARE, caps: { perMinute: 2, perHour: null }, dedupe: { enabled: true, windowMs: 60_000 } }, { now: clock.now });
    const x = f32(7, 7, 7);
    expect(s.select({ input: x, probs: UNSURE })).not.toBeNull();
    for (let i = 0; i < 5; i++) expect(s.select({ input: x, probs: UNSURE })).toBeNull();
    expect(s.select({ input: fresh(), probs: UNSURE })).not.toBeNull(); // budget still had room for this one
    expect(s.select({ input: fresh(), probs: UNSURE })).toBeNull(); // now capped
    const c = s.counters();
    expect(c.duplicate.low_confidence).toBe(5);
    expect(c.capped.low_confidence).toBe(1);
    expect(c.selected.low_confidence).toBe(2);
  });

  it('a capped input is not remembered, so it can be selected once the cap frees', () => {
    const clock = fakeClock();
    const s = createSelector({ ...BARE, caps: { perMinute: 1, perHour: null }, dedupe: { enabled: true, windowMs: 3_600_000 } }, { now: clock.now });
    expect(s.select({ input: fresh(), probs: UNSURE })).not.toBeNull();
    const x = f32(5, 5);
    expect(s.select({ input: x, probs: UNSURE })).toBeNull(); // capped
    clock.advance(60_000);
    expect(s.select({ input: x, probs: UNSURE })).not.toBeNull(); // not a duplicate
    expect(s.counters().duplicate.low_confidence).toBe(0);
  });

  it('outputs without a reason touch neither dedupe nor caps', () => {
    const s = createSelector({ ...BARE, caps: { perMinute: 1, perHour: null }, dedupe: { enabled: true } }, { random: () => 0.99 });
    const x = f32(3, 3);
    for (let i = 0; i < 10; i++) expect(s.select({ input: x, probs: CONFIDENT })).toBeNull();
    expect(s.select({ input: x, probs: UNSURE })).toEqual({ reason: 'low_confidence' });
    const c = s.counters();
    expect(c.capped.low_confidence + c.duplicate.low_confidence).toBe(0);
  });

  it('counts per reason: audit duplicates and caps are attributed to audit', () => {
    const clock = fakeClock();
    const s = createSelector({ ...BARE, audit: { rate: 0.5 }, caps: { perMinute: 1, perHour: null }, dedupe: { enabled: true } }, { now: clock.now, random: () => 0.1 });
    const x = f32(4, 4);
    expect(s.select({ input: x, probs: CONFIDENT })).toEqual({ reason: 'audit' });
    expect(s.select({ input: x, probs: CONFIDENT })).toBeNull();
    expect(s.select({ input: fresh(), probs: CONFIDENT })).toBeNull();
    expect(s.counters()).toMatchObject({ selected: { audit: 1 }, duplicate: { audit: 1 }, capped: { audit: 1 } });
  });
});

describe('SlidingWindowCap', () => {
  it('allows exactly limit per window at the boundary', () => {
    const cap = new SlidingWindowCap(2, 1000);
    expect(cap.allows(0)).toBe(true);
    cap.record(0);
    cap.record(500);
    expect(cap.allows(999)).toBe(false);
    expect(cap.allows(1000)).toBe(true);
    cap.record(1000);
    expect(cap.allows(1499)).toBe(false);
    expect(cap.allows(1500)).toBe(true);
  });
});
