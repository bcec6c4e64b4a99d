/**
 * Issue 13 item 1: superseding and convergence per release line (model, cohort). A base release goes
 * to devices in no cohort, a cohort release to its cohort's members only; a newer base rollout never
 * takes a cohort member, and a returning device converges to its own line. So a device never flips
 * between the base and its cohort's student.
 */
import { eq } from 'drizzle-orm';
import { describe, expect, it } from 'vitest';
import { models, releases } from '../../../cloud/registry/schema.js';
import { RolloutError } from '../../../cloud/rollouts/policy.js';
import { MODEL } from '../fleet/fixtures.js';
import { onFakeTime, type RolloutHarness } from '../rollouts/harness.js';

describe('rollouts per release line', () => {
  let h: RolloutHarness;
  onFakeTime(
    (x) => (h = x),
    (x) => {
      x.fx.db.update(models).set({ distillSettings: { baseData: 'mnist:train', cohorts: [{ name: 'rot', group: 'rot' }] } }).where(eq(models.name, MODEL)).run();
      // 1, 2: base line; 3, 5: cohort rot (parent: base 2, 4); 4: base.
      x.addRelease(3, 2);
      x.addRelease(4, 2);
      x.addRelease(5, 4);
      for (const seq of [3, 5]) x.fx.db.update(releases).set({ cohort: 'rot' }).where(eq(releases.seq, seq)).run();
      for (const id of ['b1', 'b2']) x.fx.addDevice(id, { groups: ['lab'], runningSeq: 1, desiredSeq: 1 });
      for (const id of ['r1', 'r2']) x.fx.addDevice(id, { groups: ['lab', 'rot'], runningSeq: 1, desiredSeq: 1 });
    },
  );

  const members = async (id: string) => (await h.view(id)).devices.map((d) => `${d.deviceId}:${d.state}`).sort();

  it('targets only the line, supersedes only within it, and a returning device converges to its own line', async () => {
    await h.boot();
    const base = await h.engine.create({ model: MODEL, releaseSeq: 2, waves: [1], soakSeconds: 10 });
    expect((await members(base.id))).toEqual(['b1:desired', 'b2:desired']);
    const cohort = await h.engine.create({ model: MODEL, releaseSeq: 3, waves: [1], soakSeconds: 10 });
    expect((await members(cohort.id))).toEqual(['r1:desired', 'r2:desired']);
    // The cohort rollout took nothing from the base one (another line).
    expect((await members(base.id))).toEqual(['b1:desired', 'b2:desired']);
    for (const id of ['r1', 'r2']) await h.install(id, 3);
    await h.advance(15);
    expect((await h.view(cohort.id)).rollout.state).toBe('completed');

    // A newer base release supersedes the older base rollout only; the cohort members stay on 3.
    const base2 = await h.engine.create({ model: MODEL, releaseSeq: 4, waves: [1], soakSeconds: 10 });
    expect((await members(base2.id))).toEqual(['b1:desired', 'b2:desired']);
    expect((await members(base.id))).toEqual(['b1:superseded', 'b2:superseded']);
    expect((await h.view(base.id)).rollout.state).toBe('superseded');
    expect((await h.view(cohort.id)).rollout.state).toBe('completed');
    for (const id of ['r1', 'r2']) expect(h.fake.desiredRelease(id)).toBe(3);
    for (const id of ['b1', 'b2']) await h.install(id, 4);
    await h.advance(15);
    expect((await h.view(base2.id)).rollout.state).toBe('completed');

    // A cohort release aimed at base-line devices only: refused, naming the line.
    await expect(h.engine.create({ model: MODEL, releaseSeq: 5, target: { kind: 'devices', ids: ['b1'] }, waves: [1] })).rejects.toThrow(RolloutError);
    await expect(h.engine.create({ model: MODEL, releaseSeq: 5, target: { kind: 'devices', ids: ['b1'] }, waves: [1] })).rejects.toThrow(/cohort rot/);

    // Late devices: each converges to the latest completed rollout of its own line.
    h.fx.addDevice('b3', { groups: ['lab'] });
    h.fx.addDevice('r3', { groups: ['rot'] });
    await h.online('b3', null);
    await h.online('r3', null);
    expect(h.fake.desiredRelease('b3')).toBe(4);
    expect(h.fake.desiredRelease('r3')).toBe(3);
  });
});
