/**
 * Issue 15 item 4 for rounds: two round runners (two replicas) on one throwaway PostgreSQL database, each
 * with its own fence, and takeovers made with bumpEpoch. A runner leading under a stale epoch gets no
 * signature, and its worker stores no release; its round-row writes and model claims are refused (counted);
 * the next leader fails the orphaned round naming both epochs and retries it to a release; the model's claim
 * follows the round and is freed at its end.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { eq } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { Registry as PromRegistry } from 'prom-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openFence } from '../../../cloud/cluster/fence.js';
import { roundClaims } from '../../../cloud/cluster/round-claims.js';
import { bumpEpoch } from '../../../cloud/cluster/store.js';
import { openRegistry, type StoreRegistry } from '../../../cloud/registry/open.js';
import { RoundRunner } from '../../../cloud/rounds/runner.js';
import { createThrowawayDb, postgresSkipReason, type ThrowawayDb } from '../../helpers/pg-throwaway.js';
import { FakePublisher, FakeRollouts, TestSigner, insertModel, tempDir } from '../../unit/rounds/helpers.js';

const FAKE_WORKER = fileURLToPath(new URL('./fake-worker.ts', import.meta.url));

/** The value of apprentice_cluster_fence_refusals_total{kind} in `metrics`. */
async function refusals(metrics: PromRegistry, kind: string): Promise<number> {
  const m = await metrics.getSingleMetric('apprentice_cluster_fence_refusals_total')?.get();
  return m?.values.find((v) => v.labels.kind === kind)?.value ?? 0;
}

describe('RoundRunner fenced on the leader epoch (PostgreSQL, two replicas)', () => {
  let db: ThrowawayDb | undefined;
  let skip: string | undefined;
  let pool: pg.Pool;
  const closers: (() => Promise<void>)[] = [];
  const tmp = tempDir();

  beforeAll(async () => {
    skip = await postgresSkipReason('the fenced round runner');
    if (skip) return;
    db = await createThrowawayDb();
    pool = new pg.Pool({ connectionString: db.url, max: 2 });
  });
  afterEach(async () => {
    for (const c of closers.splice(0).reverse()) await c();
  });
  afterAll(async () => {
    await pool?.end();
    await db?.drop();
    tmp.cleanup();
  });

  /** One replica: its registry pool, fence (own metrics) and a follower runner, all closed after the test. */
  async function replica(holder: string) {
    const registry = await openRegistry({ url: db!.url, poolSize: 4 });
    const metrics = new PromRegistry();
    const fence = openFence(db!.url, { metrics });
    const signer = new TestSigner();
    const runner = RoundRunner.follower({ registry, dataDir: tmp.dir, signer, publish: new FakePublisher(), rollouts: new FakeRollouts(), cluster: { fence: fence.fence, holder }, options: { workerPath: FAKE_WORKER } });
    closers.push(async () => {
      await runner.dispose(200);
      await fence.close();
      await registry.close();
    });
    return { registry, metrics, signer, runner, holder };
  }

  const waitUntil = async (what: string, f: () => Promise<boolean>) => {
    for (const until = Date.now() + 20_000; !(await f()); ) {
      if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  };

  async function scenario(model: string, waitBefore: 'sign' | 'store') {
    const gate = join(tmp.dir, `${model}.go`);
    const a = await replica('replica-a');
    await insertModel(a.registry, { name: model, distillSettings: { baseData: 'mnist:train', fake: 'release', waitBefore, gate } });
    const e1 = await bumpEpoch(drizzle(pool), a.holder);
    await a.runner.lead(e1, 100);
    const { id } = await a.runner.start(model, 'manual');
    // The worker reached the step it waits at (it reports a second progress there).
    await waitUntil('the worker to wait', async () => (await a.runner.get(id))?.progress?.epoch === 2);
    expect(await roundClaims(drizzle(pool))).toMatchObject([{ modelId: model, roundId: id, epoch: e1, holder: 'replica-a' }]);

    // Takeover: replica b's epoch. A's worker goes on.
    const b = await replica('replica-b');
    const e2 = await bumpEpoch(drizzle(pool), b.holder);
    writeFileSync(gate, '');
    await a.runner.settled(id);
    return { a, b, id, e1, e2 };
  }

  async function takeover(s: Awaited<ReturnType<typeof scenario>>, model: string) {
    const { a, b, id, e1, e2 } = s;
    const { rounds, releases } = b.registry.t;
    // A's final row write was refused: the round is left `running` for the next leader.
    expect((await b.registry.q.select().from(rounds).where(eq(rounds.id, id)))[0]!.state).toBe('running');
    expect(await refusals(a.metrics, 'write')).toBeGreaterThan(0);
    expect(await b.registry.q.select().from(releases).where(eq(releases.roundId, id))).toEqual([]);

    await b.runner.lead(e2, 100);
    const orphan = (await b.runner.get(id))!;
    expect(orphan.state).toBe('failed');
    expect(orphan.error).toMatch(new RegExp(`^leader changed \\(epoch ${e1}→${e2}\\) during round; retried as [0-9a-f-]{36}$`));
    const retryId = orphan.error!.replace(/^.* retried as /, '');
    // The stale leader's poll may see the retry queued too: its claim is refused, only b runs it.
    await waitUntil('the retry released', async () => (await b.runner.get(retryId))?.state === 'released');
    expect(await b.runner.get(retryId)).toMatchObject({ trigger: 'retry', attempts: 2, model });
    expect(b.signer.signed).toHaveLength(1);
    const rows = await b.registry.q.select({ roundId: releases.roundId }).from(releases).where(eq(releases.model, model));
    expect(rows).toEqual([{ roundId: retryId }]);
    // The round ended: its claim is freed (the orphan's moved to the retry first). The row says `released`
    // before the claim is freed: wait until the round left b's runner.
    await b.runner.settled(retryId);
    expect((await roundClaims(drizzle(pool))).filter((c) => c.modelId === model)).toEqual([]);
    expect(await b.runner.get(id)).toMatchObject({ state: 'failed' }); // nothing of a's landed after it
  }

  it('a stale leader that resumes gets no signature (round.sign refused, counted); the next leader fails the orphan naming both epochs and retries it', async (ctx) => {
    if (skip) return ctx.skip(skip);
    const s = await scenario('fenced-sign', 'sign');
    expect(s.a.signer.signed).toEqual([]);
    expect(await refusals(s.a.metrics, 'check')).toBe(1);
    await takeover(s, 'fenced-sign');
  });

  it('a worker signed before the takeover stores nothing after it (its fenced insert refused)', async (ctx) => {
    if (skip) return ctx.skip(skip);
    const s = await scenario('fenced-store', 'store');
    // Signed while a still led; the insert came after the takeover.
    expect(s.a.signer.signed).toHaveLength(1);
    const { rounds } = s.b.registry.t;
    const [row] = await s.b.registry.q.select().from(rounds).where(eq(rounds.id, s.id));
    expect(row!.state).toBe('running');
    await takeover(s, 'fenced-store');
  });

  it('without a cluster epoch (lead(0)) nothing is fenced or claimed, as in one process', async (ctx) => {
    if (skip) return ctx.skip(skip);
    const a = await replica('replica-solo');
    await insertModel(a.registry, { name: 'unfenced', distillSettings: { baseData: 'mnist:train', fake: 'release' } });
    await a.runner.lead(0, 100);
    const { id } = await a.runner.start('unfenced', 'manual');
    expect(await a.runner.settled(id)).toMatchObject({ state: 'released' });
    expect((await roundClaims(drizzle(pool))).filter((c) => c.modelId === 'unfenced')).toEqual([]);
    expect(await refusals(a.metrics, 'write')).toBe(0);
  });
});
