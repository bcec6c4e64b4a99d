import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { HealthGate, type HealthGateOptions, type HealthVerdict } from '../../../edge/runtime/health.js';
import type { LoadedModel } from '../../../edge/runtime/host.js';
import { denseModel, makeManifest } from '../../fixtures/onnx-models.js';

const model = denseModel({ seed: 21 });
const manifest = makeManifest(model, { release: 7 });
const loaded: LoadedModel = { manifest, sha256: model.sha256, loadedAt: 0 };
const other = 'e'.repeat(64);

function setup(opts: Partial<HealthGateOptions> = {}) {
  const unhealthy: HealthVerdict[] = [];
  const committed: HealthVerdict[] = [];
  const gate = new HealthGate({ windowMs: 60_000, onUnhealthy: (v) => unhealthy.push(v), onCommitted: (v) => committed.push(v), ...opts });
  const ok = (latencyMs = 1, sha256 = model.sha256) => gate.observed({ sha256, n: 1, ok: true, nonFinite: false, latencyMs });
  const fail = (nonFinite = false) => gate.observed({ sha256: model.sha256, n: 1, ok: false, nonFinite, latencyMs: 1 });
  return { gate, unhealthy, committed, ok, fail };
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('HealthGate', () => {
  it('commits once after a clean window', () => {
    const { gate, unhealthy, committed, ok } = setup({ latencyBudgetMs: 10 });
    gate.switched(loaded);
    expect(gate.watching).toBe(model.sha256);
    for (let i = 0; i < 100; i++) ok(2);
    vi.advanceTimersByTime(59_999);
    expect(committed).toHaveLength(0);
    vi.advanceTimersByTime(1);
    expect(unhealthy).toHaveLength(0);
    expect(committed).toEqual([expect.objectContaining({ sha256: model.sha256, release: 7, requests: 100, errors: 0, p95Ms: 2 })]);
    expect(committed[0]!.reason).toBeUndefined();
    expect(gate.watching).toBeUndefined();
    vi.advanceTimersByTime(120_000);
    ok();
    expect(committed).toHaveLength(1);
  });

  it('one NaN output is not a verdict: a lone ±3e38 request does not roll back a good model', () => {
    const { gate, unhealthy, committed, ok, fail } = setup();
    gate.switched(loaded);
    fail(true);
    for (let i = 0; i < 50; i++) ok();
    vi.advanceTimersByTime(60_000);
    expect(unhealthy).toHaveLength(0);
    expect(committed).toEqual([expect.objectContaining({ nonFinite: 1, requests: 51 })]);
  });

  it('NaN outputs roll back as a rate, once the minimum number of runs is reached, and only once', () => {
    const { gate, unhealthy, committed, ok, fail } = setup({ maxNonFinite: 3, maxNonFiniteRate: 0.05, minRequests: 20 });
    gate.switched(loaded);
    for (let i = 0; i < 19; i++) (i % 4 === 0 ? fail(true) : ok()); // 5 of 19: a high rate, too few runs yet
    expect(unhealthy).toHaveLength(0);
    ok();
    expect(unhealthy).toEqual([expect.objectContaining({ reason: 'nan_output', sha256: model.sha256, nonFinite: 5, requests: 20 })]);
    fail(true);
    vi.advanceTimersByTime(60_000);
    expect(unhealthy).toHaveLength(1);
    expect(committed).toHaveLength(0);
  });

  it('a low NaN rate over many runs is tolerated; a high one over few runs is judged at the end of the window', () => {
    const low = setup();
    low.gate.switched(loaded);
    for (let i = 0; i < 200; i++) (i % 50 === 0 ? low.fail(true) : low.ok()); // 4 of 200 = 2 %
    vi.advanceTimersByTime(60_000);
    expect(low.unhealthy).toHaveLength(0);
    expect(low.committed).toHaveLength(1);

    const few = setup();
    few.gate.switched(loaded);
    for (let i = 0; i < 4; i++) few.fail(true);
    few.ok();
    expect(few.unhealthy).toHaveLength(0);
    vi.advanceTimersByTime(60_000);
    expect(few.unhealthy).toEqual([expect.objectContaining({ reason: 'nan_output', nonFinite: 4, requests: 5 })]);
  });

  it('flags inference errors past the rate threshold', () => {
    const { gate, unhealthy, ok, fail } = setup({ maxErrorRate: 0.1, minErrors: 3 });
    gate.switched(loaded);
    for (let i = 0; i < 40; i++) ok();
    fail();
    fail();
    fail();
    fail();
    expect(unhealthy).toHaveLength(0); // 4 / 44 < 10 %
    fail();
    expect(unhealthy).toEqual([expect.objectContaining({ reason: 'inference_errors', errors: 5, requests: 45 })]);
  });

  it('flags a p95 latency over budget at the end of the window', () => {
    const { gate, unhealthy, committed, ok } = setup({ latencyBudgetMs: 5, minLatencySamples: 20 });
    gate.switched(loaded);
    for (let i = 0; i < 90; i++) ok(1);
    for (let i = 0; i < 10; i++) ok(50); // 10 % slow: p95 is slow
    vi.advanceTimersByTime(60_000);
    expect(committed).toHaveLength(0);
    expect(unhealthy).toEqual([expect.objectContaining({ reason: 'latency_budget', p95Ms: 50 })]);
  });

  it('skips the latency check with too few samples', () => {
    const { gate, unhealthy, committed, ok } = setup({ latencyBudgetMs: 5, minLatencySamples: 20 });
    gate.switched(loaded);
    for (let i = 0; i < 5; i++) ok(100);
    vi.advanceTimersByTime(60_000);
    expect(unhealthy).toHaveLength(0);
    expect(committed[0]).toMatchObject({ p95Ms: null, requests: 5 });
  });

  it('ends the window early after windowRequests runs', () => {
    const { gate, committed, ok } = setup({ windowRequests: 50 });
    gate.switched(loaded);
    for (let i = 0; i < 49; i++) ok();
    expect(committed).toHaveLength(0);
    ok();
    expect(committed).toHaveLength(1);
  });

  it('ignores runs of another model and restarts on a new switch', () => {
    const { gate, unhealthy, committed, ok, fail } = setup({ maxNonFinite: 1, minRequests: 1 });
    gate.switched(loaded);
    ok(1, other);
    fail(true); // counted: it is the watched model
    expect(unhealthy).toHaveLength(1);
    const next: LoadedModel = { ...loaded, sha256: other, manifest: { ...manifest, release: 8 } };
    gate.switched(next);
    vi.advanceTimersByTime(30_000);
    gate.switched(loaded); // abandons the window of `next`
    vi.advanceTimersByTime(59_000);
    expect(committed).toHaveLength(0);
    vi.advanceTimersByTime(1_000);
    expect(committed.map((c) => c.release)).toEqual([7]);
  });

  it('keeps going when a callback throws', () => {
    const gate = new HealthGate({ windowMs: 10, onUnhealthy: () => {}, onCommitted: () => { throw new Error('boom'); } });
    gate.switched(loaded);
    expect(() => vi.advanceTimersByTime(10)).not.toThrow();
    gate.dispose();
  });
});
