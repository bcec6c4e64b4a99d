import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { rolloutProgress } from '../../../cloud/fleet/rollout-progress.js';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { shortCache } from '../../../cloud/ui/registry-data.js';
import { registryDialects } from '../../helpers/dialects.js';

const dialects = registryDialects();

describe.each(dialects)('rollout progress for the console (counts in SQL, a bounded device page) on $name', (d) => {
  let reg: StoreRegistry | undefined;
  /** Why this dialect's cases are skipped (PostgreSQL unreachable and not required), if they are. */
  let unavailable: string | undefined;
  const states = (i: number) => (i % 50 === 7 ? 'failed' : i % 200 === 3 ? 'quarantined' : i < 600 ? 'installed' : 'waiting');
  beforeAll(async () => {
    try {
      reg = await d.open({ skip: (note) => void (unavailable = note ?? 'unavailable') });
    } catch (err) {
      if (!unavailable) throw err;
    }
    if (unavailable || !reg) return;
    const { models, releases, rollouts, rolloutDevices } = reg.t;
    await reg.q.insert(models).values({ name: 'digits', inputSpec: {} as never, labels: [], teacher: {} as never, studentSpec: 'mlp', distillSettings: {} });
    await reg.q.insert(releases).values({ model: 'digits', seq: 1, sha256: 'a'.repeat(64), bytes: 1, quantization: 'int8', metrics: {}, manifest: {} as never, signature: {} as never, artifactPath: 'x' });
    await reg.q.insert(rollouts).values({ id: 'ro-1', model: 'digits', releaseSeq: 1, target: { kind: 'all' }, canaryShare: 0.1, soakSeconds: 60, failureThreshold: 0.2, state: 'fleet', waves: [0.1, 0.5, 1], wave: 1, pausedAt: '2026-11-30T10:00:00Z', pauseReason: 'lunch' });
    const rows = Array.from({ length: 1000 }, (_, i) => ({ rolloutId: 'ro-1', deviceId: `dev-${String(i).padStart(4, '0')}`, canary: i < 100, state: states(i), wave: i < 100 ? 0 : i < 500 ? 1 : 2 }));
    await reg.q.insert(rolloutDevices).values(rows as never);
  });
  beforeEach((ctx) => {
    if (unavailable) ctx.skip(unavailable);
  });
  afterAll(() => d.close());

  it('counts every device per state and wave, and lists only the page, failed and quarantined first', async () => {
    if (!reg) throw new Error('registry not opened');
    const p = (await rolloutProgress(reg, 'ro-1', { deviceLimit: 25 }))!;
    const expected: Record<string, number> = {};
    for (let i = 0; i < 1000; i++) expected[states(i)] = (expected[states(i)] ?? 0) + 1;
    expect(p.counts).toEqual(expected);
    expect(p.deviceTotal).toBe(1000);
    expect(p.waves).toEqual([0.1, 0.5, 1]);
    expect(p.waveProgress.map((w) => Object.values(w.counts).reduce((a, b) => a + b, 0))).toEqual([100, 400, 500]);
    expect(p).toMatchObject({ state: 'fleet', wave: 1, paused: true, pauseReason: 'lunch', release: 1 });
    expect(p.devices).toHaveLength(25);
    expect(p.devices.every((d) => d.state === 'failed' || d.state === 'quarantined')).toBe(true);
    expect(p.devices[0]!.canary).toBe(true);
    expect(await rolloutProgress(reg, 'nope')).toBeUndefined();
  });
});

describe('shortCache', () => {
  it('computes once per TTL, shares a computation in flight, recomputes after invalidate or a failure', async () => {
    let t = 0;
    let calls = 0;
    let fail = false;
    const c = shortCache(async () => {
      calls++;
      if (fail) throw new Error('boom');
      return calls;
    }, 1000, () => t);
    expect(await Promise.all([c.get(), c.get()])).toEqual([1, 1]);
    t = 999;
    expect(await c.get()).toBe(1);
    t = 1000;
    expect(await c.get()).toBe(2);
    c.invalidate();
    expect(await c.get()).toBe(3);
    c.invalidate();
    fail = true;
    await expect(c.get()).rejects.toThrow('boom');
    fail = false;
    expect(await c.get()).toBe(5); // the failure was not cached
  });
});
