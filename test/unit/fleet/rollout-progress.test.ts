import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rolloutProgress } from '../../../cloud/fleet/rollout-progress.js';
import { Registry } from '../../../cloud/registry/db.js';
import { shortCache } from '../../../cloud/ui/registry-data.js';

describe('rollout progress for the console (counts in SQL, a bounded device page)', () => {
  let dir: string;
  let reg: Registry;
  const states = (i: number) => (i % 50 === 7 ? 'failed' : i % 200 === 3 ? 'quarantined' : i < 600 ? 'installed' : 'waiting');
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'rollout-progress-'));
    reg = Registry.open(join(dir, 'registry.db'));
    const db = reg.sqlite;
    db.exec(`INSERT INTO models (name, input_spec, labels, teacher, student_spec, distill_settings) VALUES ('digits', '{}', '[]', '{}', 'mlp', '{}')`);
    db.exec(`INSERT INTO releases (model, seq, sha256, bytes, quantization, metrics, manifest, signature, artifact_path) VALUES ('digits', 1, '${'a'.repeat(64)}', 1, 'int8', '{}', '{}', '{}', 'x')`);
    db.exec(`INSERT INTO rollouts (id, model, release_seq, target, canary_share, soak_seconds, failure_threshold, state, waves, wave, paused_at, pause_reason) VALUES ('ro-1', 'digits', 1, '{"kind":"all"}', 0.1, 60, 0.2, 'fleet', '[0.1,0.5,1]', 1, '2026-11-30T10:00:00Z', 'lunch')`);
    const ins = db.prepare(`INSERT INTO rollout_devices (rollout_id, device_id, canary, state, wave) VALUES ('ro-1', ?, ?, ?, ?)`);
    db.transaction(() => {
      for (let i = 0; i < 1000; i++) ins.run(`dev-${String(i).padStart(4, '0')}`, i < 100 ? 1 : 0, states(i), i < 100 ? 0 : i < 500 ? 1 : 2);
    })();
  });
  afterAll(() => {
    reg.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  it('counts every device per state and wave, and lists only the page, failed and quarantined first', async () => {
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
