import { eq, sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { Registry as PromRegistry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Fence, StaleLeaderError } from '../../../cloud/cluster/fence.js';
import { leaderWriter } from '../../../cloud/cluster/fenced-tx.js';
import { bumpEpoch } from '../../../cloud/cluster/store.js';
import { openRegistry, type StoreRegistry } from '../../../cloud/registry/open.js';
import { q } from '../../../cloud/registry/tx.js';
import { createThrowawayDb, postgresSkipReason, type ThrowawayDb } from '../../helpers/pg-throwaway.js';

/** A write through the writer: one meta row, so the test can see whether it landed. */
const putMeta = (key: string) =>
  function* (tx: Parameters<Parameters<StoreRegistry['tx']>[0]>[0], t: Parameters<Parameters<StoreRegistry['tx']>[0]>[1]) {
    yield* q(tx.insert(t.meta).values({ key, value: 'x' }));
    return key;
  };

async function metaKeys(reg: StoreRegistry): Promise<string[]> {
  const rows = await reg.q.select({ key: reg.t.meta.key }).from(reg.t.meta);
  return rows.map((r) => r.key).sort();
}

describe('leaderWriter on SQLite (one process, nothing to fence)', () => {
  it('is the registry transaction itself, whatever the epoch', async () => {
    const reg = await openRegistry({ path: ':memory:' });
    const w = leaderWriter(reg, 0);
    expect(w.fenced).toBe(false);
    await expect(w.tx('test.write', putMeta('a'))).resolves.toBe('a');
    expect(await metaKeys(reg)).toContain('a');
    await reg.close();
  });
});

describe('leaderWriter on PostgreSQL', () => {
  let db: ThrowawayDb | undefined;
  let skip: string | undefined;
  let reg: StoreRegistry;
  let pool: pg.Pool;
  let fence: Fence;
  const metrics = new PromRegistry();

  beforeAll(async () => {
    skip = await postgresSkipReason('the fenced leader writes');
    if (skip) return;
    db = await createThrowawayDb();
    reg = await openRegistry({ url: db.url, poolSize: 4 });
    pool = new pg.Pool({ connectionString: db.url, max: 2 });
    fence = new Fence({ db: drizzle(pool), metrics });
  });
  afterAll(async () => {
    await reg?.close();
    await pool?.end();
    await db?.drop();
  });

  it('commits while the epoch is its own and refuses (nothing written, counted) after a takeover', async (ctx) => {
    if (skip) return ctx.skip(skip);
    const epoch = await bumpEpoch(drizzle(pool), 'replica-a');
    const w = leaderWriter(reg, epoch, fence);
    expect(w.fenced).toBe(true);
    await w.tx('test.write', putMeta('before'));
    const next = await bumpEpoch(drizzle(pool), 'replica-b');
    expect(next).toBe(epoch + 1);
    const err = await w.tx('test.write', putMeta('after')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StaleLeaderError);
    expect((err as StaleLeaderError).currentEpoch).toBe(next);
    expect(await metaKeys(reg)).toEqual(expect.arrayContaining(['before']));
    expect(await metaKeys(reg)).not.toContain('after');
    const refusals = (await metrics.getSingleMetric('apprentice_cluster_fence_refusals_total')!.get()).values;
    expect(refusals).toEqual([expect.objectContaining({ labels: { kind: 'write' }, value: 1 })]);
  });

  it('a takeover waits for a fenced write in flight, so the write commits before the new epoch exists', async (ctx) => {
    if (skip) return ctx.skip(skip);
    const epoch = await bumpEpoch(drizzle(pool), 'replica-a');
    const w = leaderWriter(reg, epoch, fence);
    const order: string[] = [];
    const writing = w.tx('test.slow-write', function* (tx, t) {
      yield* q(tx.insert(t.meta).values({ key: 'slow', value: 'x' }));
      // Hold the transaction open (pg_sleep) while the takeover starts.
      yield* q((tx as unknown as { execute: (s: unknown) => PromiseLike<unknown> }).execute(sql`SELECT pg_sleep(0.3)`));
      return 'slow';
    }).then(() => order.push('write committed'));
    await new Promise((r) => setTimeout(r, 100));
    const takeover = bumpEpoch(drizzle(pool), 'replica-b').then((e) => order.push(`epoch ${e}`));
    await Promise.all([writing, takeover]);
    expect(order).toEqual(['write committed', `epoch ${epoch + 1}`]);
    const [row] = await reg.q.select().from(reg.t.meta).where(eq(reg.t.meta.key, 'slow'));
    expect(row?.value).toBe('x');
  });

  it('epoch 0 (single process) is never fenced, even on PostgreSQL', async (ctx) => {
    if (skip) return ctx.skip(skip);
    const w = leaderWriter(reg, 0, fence);
    expect(w.fenced).toBe(false);
    await expect(w.tx('test.write', putMeta('single'))).resolves.toBe('single');
  });
});
