/**
 * Example retention (issue 9, item 9), the store on both registry dialects (issue 15), the rest on SQLite: limits by age and by rows per model,
 * never feedback rows, never a model whose round is queued or running; the counts in
 * /v1/examples/stats; the background job on fake timers; bad config refused.
 */
import { randomUUID } from 'node:crypto';
import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { cloudConfigSchema } from '../../../cloud/config/schema.js';
import { retentionConfigSchema, RetentionJob } from '../../../cloud/registry/retention-job.js';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { enforceRetention, modelsWithExamples, retentionCounts } from '../../../cloud/registry/retention.js';
import { examples, rounds } from '../../../cloud/registry/schema.js';
import { registryDialects } from '../../helpers/dialects.js';
import { call, harness, json, seedExample, seedModel, type Harness } from './helpers.js';

const NOW = new Date('2026-11-30T12:00:00.000Z');
const daysAgo = (d: number) => new Date(NOW.getTime() - d * 86_400_000).toISOString();

let h: Harness | undefined;
afterEach(() => {
  vi.useRealTimers();
  h?.close();
  h = undefined;
});

/** Examples of `model` ingested `ages` days ago (ids e-<model>-<i>); reason per index. */
function seed(hh: Harness, model: string, ages: number[], reason: (i: number) => string = () => 'low_confidence'): string[] {
  return ages.map((age, i) => {
    const id = randomUUID();
    seedExample(hh, { id, model, input: [i, 1, 2, 3], reason: reason(i), ingestedAt: daysAgo(age) });
    return id;
  });
}
/** Lets a pass started by a (fake) timer finish: it yields with setImmediate, which is not faked. */
const settle = async () => {
  for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
};
const left = (hh: Harness, model: string) => hh.registry.db.select({ id: examples.id }).from(examples).where(eq(examples.model, model)).all().map((r) => r.id);

const dialects = registryDialects();

describe.each(dialects)('example retention store on $name', (d) => {
  let reg: StoreRegistry;
  beforeEach(async (ctx) => {
    reg = await d.open(ctx);
    const m = { inputSpec: {} as never, labels: [], teacher: {} as never, studentSpec: 'mlp', distillSettings: {} };
    await reg.q.insert(reg.t.models).values([{ name: 'digits', ...m }, { name: 'other', ...m }]);
  });
  afterEach(() => d.close());

  /** Examples of `model` ingested `ages` days ago; reason per index. */
  async function seedRows(model: string, ages: number[], reason: (i: number) => string = () => 'low_confidence'): Promise<string[]> {
    const rows = ages.map((age, i) => ({ id: randomUUID(), deviceId: 'pi-1', model, releaseSeq: null, input: Buffer.from(new Float32Array([i, 1, 2, 3]).buffer), studentOutput: [0.5, 0.5], reason: reason(i), capturedAt: daysAgo(age), ingestedAt: daysAgo(age) }));
    await reg.q.insert(reg.t.examples).values(rows);
    return rows.map((r) => r.id);
  }
  const rowsOf = async (model: string) => (await reg.q.select({ id: reg.t.examples.id }).from(reg.t.examples).where(eq(reg.t.examples.model, model))).map((r) => r.id);

  it('deletes rows past the age limit and the oldest beyond the row limit, never feedback rows, only in its own model', async () => {
    // digits: ages 100, 95, 50, 40, 30, 20, 10 days; index 1 is feedback (old, but kept).
    const ids = await seedRows('digits', [100, 95, 50, 40, 30, 20, 10], (i) => (i === 1 ? 'feedback' : 'low_margin'));
    const other = await seedRows('other', [200, 1]);
    const r = await enforceRetention(reg, 'digits', { maxRows: 3, maxAgeDays: 90 }, { now: NOW, batchRows: 2 });
    expect(r).toEqual({ model: 'digits', deletedByAge: 1, deletedByRows: 2, skippedForRound: false });
    // Kept: the feedback row and the newest 3 others.
    expect(new Set(await rowsOf('digits'))).toEqual(new Set([ids[1], ids[4], ids[5], ids[6]]));
    expect((await rowsOf('other')).sort()).toEqual([...other].sort());
    expect(await retentionCounts(reg)).toEqual({ digits: { deletedByAge: 1, deletedByRows: 2, skippedForRound: 0, lastRunAt: NOW.toISOString() } });
    // Idempotent: a second pass deletes nothing more and keeps the counts.
    expect(await enforceRetention(reg, 'digits', { maxRows: 3, maxAgeDays: 90 }, { now: NOW })).toMatchObject({ deletedByAge: 0, deletedByRows: 0 });
    expect((await retentionCounts(reg, 'digits')).digits).toMatchObject({ deletedByAge: 1, deletedByRows: 2 });
    // null = no limit.
    expect(await enforceRetention(reg, 'other', { maxRows: null, maxAgeDays: null }, { now: NOW })).toMatchObject({ deletedByAge: 0, deletedByRows: 0 });
    expect(await rowsOf('other')).toHaveLength(2);
    expect((await modelsWithExamples(reg)).sort()).toEqual(['digits', 'other']);
  });

  it('leaves a model alone while one of its rounds is queued or running, and counts the skip', async () => {
    await seedRows('digits', [300, 200, 100]);
    const { rounds } = reg.t;
    for (const state of ['queued', 'running']) {
      await reg.q.insert(rounds).values({ id: `r-${state}`, model: 'digits', state, trigger: 'manual' });
      const r = await enforceRetention(reg, 'digits', { maxRows: 1, maxAgeDays: 1 }, { now: NOW });
      expect(r).toEqual({ model: 'digits', deletedByAge: 0, deletedByRows: 0, skippedForRound: true });
      expect(await rowsOf('digits')).toHaveLength(3);
      await reg.q.update(rounds).set({ state: 'released' }).where(eq(rounds.id, `r-${state}`));
    }
    expect(await enforceRetention(reg, 'digits', { maxRows: 1, maxAgeDays: 1 }, { now: NOW })).toMatchObject({ deletedByAge: 3, skippedForRound: false });
    expect((await retentionCounts(reg, 'digits')).digits).toMatchObject({ deletedByAge: 3, deletedByRows: 0, skippedForRound: 2 });
  });
});

describe('example retention', () => {
  it('GET /v1/examples/stats shows the limits per model (overrides included) and what was deleted', async () => {
    const config = retentionConfigSchema.parse({ maxRows: 2, maxAgeDays: 30, models: { other: { maxRows: null, maxAgeDays: 365 } } });
    h = harness({ retention: config });
    seedModel(h);
    seedModel(h, 'other');
    seed(h, 'digits', [60, 20, 10, 5]);
    seed(h, 'other', [400, 60, 10]);
    const job = new RetentionJob({ registry: h.registry, config, now: () => NOW });
    const outcomes = await job.runOnce();
    expect(outcomes.map((o) => [o.model, o.deletedByAge, o.deletedByRows])).toEqual(
      expect.arrayContaining([
        ['digits', 1, 1],
        ['other', 1, 0],
      ]),
    );
    const stats = await json(await call(h.app, 'GET', '/v1/examples/stats'));
    expect(stats.total).toBe(4);
    expect(stats.retention).toEqual({
      digits: { maxRows: 2, maxAgeDays: 30, deletedByAge: 1, deletedByRows: 1, skippedForRound: 0, lastRunAt: NOW.toISOString() },
      other: { maxRows: null, maxAgeDays: 365, deletedByAge: 1, deletedByRows: 0, skippedForRound: 0, lastRunAt: NOW.toISOString() },
    });
    const one = await json(await call(h.app, 'GET', '/v1/examples/stats?model=other'));
    expect(Object.keys(one.retention)).toEqual(['other']);
  });

  it('runs in the background: first pass after the delay, then every intervalSeconds; stop() ends it', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    h = harness();
    seedModel(h);
    const config = retentionConfigSchema.parse({ intervalSeconds: 60, maxRows: 1, maxAgeDays: null });
    const job = new RetentionJob({ registry: h.registry, config, now: () => NOW });
    seed(h, 'digits', [3, 2, 1]);
    job.start(1_000);
    await vi.advanceTimersByTimeAsync(999);
    expect(left(h, 'digits')).toHaveLength(3);
    await vi.advanceTimersByTimeAsync(1);
    await settle();
    expect(left(h, 'digits')).toHaveLength(1);
    seed(h, 'digits', [0.5, 0.2]);
    await vi.advanceTimersByTimeAsync(59_000);
    expect(left(h, 'digits')).toHaveLength(3);
    await vi.advanceTimersByTimeAsync(1_000);
    await settle();
    expect(left(h, 'digits')).toHaveLength(1);
    await job.stop();
    seed(h, 'digits', [0.1]);
    await vi.advanceTimersByTimeAsync(120_000);
    expect(left(h, 'digits')).toHaveLength(2);
  });

  it('refuses nonsensical retention config, naming the field', () => {
    for (const [bad, path] of [
      [{ maxRows: 0 }, 'retention.maxRows'],
      [{ maxAgeDays: -1 }, 'retention.maxAgeDays'],
      [{ intervalSeconds: 0 }, 'retention.intervalSeconds'],
      [{ models: { m: { maxRows: 1.5 } } }, 'retention.models.m.maxRows'],
      [{ models: { m: { keep: 1 } } }, 'retention.models.m'],
    ] as const) {
      const r = cloudConfigSchema.safeParse({ retention: bad });
      expect(r.success, JSON.stringify(bad)).toBe(false);
      expect(r.error!.issues.map((i) => i.path.join('.'))).toContain(path);
    }
    expect(cloudConfigSchema.parse({}).retention).toMatchObject({ maxRows: 100_000, maxAgeDays: 90, intervalSeconds: 600, models: {} });
  });
});
