import { sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { Registry as PromRegistry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Fence, StaleLeaderError, openFence } from '../../../cloud/cluster/fence.js';
import { claimRound, releaseRound, roundClaims } from '../../../cloud/cluster/round-claims.js';
import { bumpEpoch, readLeader, renewLeadership, type ClusterDb } from '../../../cloud/cluster/store.js';
import { captureLogger } from '../../helpers/log.js';
import { createThrowawayDb, postgresSkipReason, type ThrowawayDb } from '../../helpers/pg-throwaway.js';

describe('StaleLeaderError', () => {
  it('names the action and both epochs, or says the replica is not leader', () => {
    const stale = new StaleLeaderError('chunk.publish', 3, 4);
    expect(stale).toBeInstanceOf(Error);
    expect(stale.name).toBe('StaleLeaderError');
    expect(stale.message).toBe('chunk.publish refused: leader epoch 3 is stale (cluster_leader.epoch = 4)');
    expect(new StaleLeaderError('rollout.step', null, 4).message).toBe('rollout.step refused: this replica is not the cluster leader');
  });
});

const skip = await postgresSkipReason('the fence tests on PostgreSQL');

describe.skipIf(skip !== undefined)('Fence on PostgreSQL', () => {
  let tdb: ThrowawayDb;
  let pool: pg.Pool;
  let db: ClusterDb;
  const metrics = new PromRegistry();
  const cap = captureLogger();
  let fence: Fence;

  beforeAll(async () => {
    tdb = await createThrowawayDb();
    pool = new pg.Pool({ connectionString: tdb.url, max: 4 });
    db = drizzle(pool);
    await db.execute(sql`CREATE TABLE leader_writes (id bigserial PRIMARY KEY, epoch bigint NOT NULL, note text NOT NULL)`);
    fence = new Fence({ db, log: cap.log, metrics });
  });

  afterAll(async () => {
    await pool?.end();
    await tdb?.drop();
  });

  const refusals = async (kind: string) =>
    (await metrics.getSingleMetric('apprentice_cluster_fence_refusals_total')!.get()).values.find((v) => v.labels.kind === kind)?.value ?? 0;
  const notes = async () => (await db.execute<{ epoch: string; note: string }>(sql`SELECT epoch, note FROM leader_writes ORDER BY id`)).rows.map((r) => `${r.epoch}:${r.note}`);
  const insert = (epoch: number, note: string) => (tx: Parameters<Parameters<Fence['write']>[2]>[0]) => tx.execute(sql`INSERT INTO leader_writes (epoch, note) VALUES (${epoch}, ${note})`);

  it('refuses everything before any replica was elected', async () => {
    expect(await readLeader(db)).toBeNull();
    await expect(fence.write(1, 'test.write', insert(1, 'early'))).rejects.toMatchObject({ name: 'StaleLeaderError', myEpoch: 1, currentEpoch: null });
    await expect(fence.check(1, 'test.check')).rejects.toBeInstanceOf(StaleLeaderError);
    expect(await notes()).toEqual([]);
  });

  it('commits a write under the current epoch and refuses (rolls back) one under a stale epoch, counting and logging it', async () => {
    const e1 = await bumpEpoch(db, 'a');
    await fence.write(e1, 'test.write', insert(e1, 'first'));
    const e2 = await bumpEpoch(db, 'b');
    expect(e2).toBe(e1 + 1);
    const before = await refusals('write');
    const err = await fence.write(e1, 'test.write', insert(e1, 'stale')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StaleLeaderError);
    expect(err).toMatchObject({ action: 'test.write', myEpoch: e1, currentEpoch: e2 });
    expect(await refusals('write')).toBe(before + 1);
    expect(cap.lines().some((l) => l.action === 'test.write' && l.epoch === e1 && l.currentEpoch === e2 && l.level === 40)).toBe(true);
    await fence.write(e2, 'test.write', insert(e2, 'second'));
    expect(await notes()).toEqual([`${e1}:first`, `${e2}:second`]);
    await expect(fence.write(null, 'test.write', insert(0, 'none'))).rejects.toMatchObject({ myEpoch: null });
  });

  it('holds a takeover until a fenced write in flight commits, then refuses the old epoch', async () => {
    const old = (await readLeader(db))!.epoch;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let inside!: () => void;
    const entered = new Promise<void>((r) => (inside = r));
    const write = fence.write(old, 'test.slow', async (tx) => {
      await insert(old, 'in-flight')(tx);
      inside();
      await gate;
    });
    await entered;
    // The leader's own renew does not wait for its fenced write (FOR NO KEY UPDATE vs FOR KEY SHARE).
    expect(await renewLeadership(db, old, 'b')).toBe(true);
    let bumped: number | undefined;
    const takeover = bumpEpoch(drizzle(pool), 'c').then((e) => (bumped = e));
    // The bump locks the row FOR UPDATE, which the write's FOR KEY SHARE holds back until it commits.
    await db.execute(sql`SELECT pg_sleep(0.3)`);
    expect(bumped).toBeUndefined();
    const waiting = await db.execute<{ n: string }>(sql`SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`);
    expect(Number(waiting.rows[0]!.n)).toBe(1);
    release();
    await write;
    expect(await takeover).toBe(old + 1);
    await expect(fence.write(old, 'test.slow', insert(old, 'late'))).rejects.toBeInstanceOf(StaleLeaderError);
    const all = await notes();
    expect(all).toContain(`${old}:in-flight`);
    expect(all).not.toContain(`${old}:late`);
  });

  it('a fenced writer paused inside its transaction is cut off by the server and cannot hold a takeover back', async () => {
    const old = (await readLeader(db))!.epoch;
    const cut = captureLogger();
    const own = openFence(tdb.url, { log: cut.log, idleInTransactionMs: 300 });
    try {
      let inside!: () => void;
      const entered = new Promise<void>((r) => (inside = r));
      const stuck = own.fence.write(old, 'test.paused', async (tx) => {
        await insert(old, 'paused')(tx);
        inside();
        await new Promise((r) => setTimeout(r, 1500)); // a pause (SIGSTOP, GC, a hung step) mid-transaction
        await insert(old, 'after-pause')(tx);
      });
      const outcome = stuck.then(() => 'committed', (e: unknown) => (e instanceof Error ? e.message : String(e)));
      await entered;
      const next = await bumpEpoch(drizzle(pool), 'e'); // waits for the server to end the idle transaction
      expect(next).toBe(old + 1);
      expect(await outcome).not.toBe('committed');
      expect(cut.lines().some((l) => String(l.err).includes('idle-in-transaction'))).toBe(true);
      const all = await notes();
      expect(all).not.toContain(`${old}:paused`);
      expect(all).not.toContain(`${old}:after-pause`);
    } finally {
      await own.close();
    }
  });

  it('check passes for the current epoch only', async () => {
    const cur = (await readLeader(db))!.epoch;
    await expect(fence.check(cur, 'round.sign')).resolves.toBeUndefined();
    const before = await refusals('check');
    await expect(fence.check(cur - 1, 'round.sign')).rejects.toMatchObject({ action: 'round.sign', myEpoch: cur - 1, currentEpoch: cur });
    expect(await refusals('check')).toBe(before + 1);
  });

  it('guardPublish hands a message on only for the current leader', async () => {
    const cur = (await readLeader(db))!.epoch;
    const sent: string[] = [];
    const publish = async (topic: string) => {
      sent.push(topic);
      return topic.length;
    };
    let mine: number | null = cur;
    const guarded = fence.guardPublish({ epoch: () => mine }, 'chunk.publish', publish);
    expect(await guarded('a/1')).toBe(3);
    const before = await refusals('publish');
    mine = cur - 1;
    await expect(guarded('a/2')).rejects.toMatchObject({ action: 'chunk.publish', myEpoch: cur - 1, currentEpoch: cur });
    mine = null;
    await expect(guarded('a/3')).rejects.toMatchObject({ myEpoch: null });
    expect(sent).toEqual(['a/1']);
    expect(await refusals('publish')).toBe(before + 2);
  });

  it('guardPublish with a lease skips the read only while the elector renewed within leaseMs', async () => {
    const cur = (await readLeader(db))!.epoch;
    const sent: string[] = [];
    let fresh = true;
    const source = { epoch: () => cur - 1, renewedWithin: (ms: number) => fresh && ms === 200 };
    const guarded = fence.guardPublish(source, 'chunk.publish', async (t: string) => void sent.push(t), 200);
    // Within the lease the (here deliberately stale) epoch is not re-read: that is the window a lease accepts.
    await guarded('leased');
    fresh = false;
    await expect(guarded('expired')).rejects.toBeInstanceOf(StaleLeaderError);
    expect(sent).toEqual(['leased']);
  });

  it('allows one round per model: a second claim waits, an older epoch claim is taken over as orphaned', async () => {
    const e = (await readLeader(db))!.epoch;
    expect(await claimRound(fence, e, 'c', 'digits', 'r1')).toEqual({ claimed: true, orphaned: null });
    expect(await claimRound(fence, e, 'c', 'digits', 'r2')).toEqual({ claimed: false, running: { roundId: 'r1', epoch: e, holder: 'c' } });
    // The same round claiming again (its launch retried) keeps its claim.
    expect(await claimRound(fence, e, 'c', 'digits', 'r1')).toEqual({ claimed: true, orphaned: null });
    expect(await claimRound(fence, e, 'c', 'letters', 'r3')).toEqual({ claimed: true, orphaned: null });
    const next = await bumpEpoch(db, 'd');
    await expect(claimRound(fence, e, 'c', 'digits', 'r4')).rejects.toBeInstanceOf(StaleLeaderError);
    await expect(releaseRound(fence, e, 'digits', 'r1')).rejects.toBeInstanceOf(StaleLeaderError);
    expect(await claimRound(fence, next, 'd', 'digits', 'r5')).toEqual({ claimed: true, orphaned: { roundId: 'r1', epoch: e, holder: 'c' } });
    expect(await releaseRound(fence, next, 'digits', 'r1')).toBe(false);
    expect(await releaseRound(fence, next, 'digits', 'r5')).toBe(true);
    const left = await roundClaims(db);
    expect(left.map((c) => [c.modelId, c.roundId, c.epoch])).toEqual([['letters', 'r3', e]]);
  });
});
