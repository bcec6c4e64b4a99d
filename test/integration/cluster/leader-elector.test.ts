import { sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { Registry as PromRegistry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_LEADER_LOCK_KEY, DEFAULT_LEADER_TIMINGS, LeaderElector, validateTimings } from '../../../cloud/cluster/leader.js';
import { readLeader, type ClusterDb } from '../../../cloud/cluster/store.js';
import { captureLogger } from '../../helpers/log.js';
import { createThrowawayDb, postgresSkipReason, type ThrowawayDb } from '../../helpers/pg-throwaway.js';

describe('leader timings', () => {
  it('accepts the defaults and refuses timings where a live leader would hit its own idle timeout', () => {
    expect(() => validateTimings(DEFAULT_LEADER_TIMINGS)).not.toThrow();
    expect(() => validateTimings({ ...DEFAULT_LEADER_TIMINGS, renewMs: 4000 })).toThrow(/renewMs \+ queryTimeoutMs \(6000\) must be below sessionIdleTimeoutMs \(5000\)/);
    expect(() => validateTimings({ ...DEFAULT_LEADER_TIMINGS, pollMs: 0 })).toThrow(/pollMs must be > 0/);
  });
});

const skip = await postgresSkipReason('the leader elector tests on PostgreSQL');

/** Two electors in this process: roles, epochs, step-down on a lost session, release on stop. */
describe.skipIf(skip !== undefined)('LeaderElector on PostgreSQL', () => {
  let tdb: ThrowawayDb;
  let pool: pg.Pool;
  let db: ClusterDb;
  const electors: LeaderElector[] = [];
  const calls: string[] = [];

  beforeAll(async () => {
    tdb = await createThrowawayDb();
    pool = new pg.Pool({ connectionString: tdb.url, max: 2 });
    db = drizzle(pool);
  });

  afterAll(async () => {
    await Promise.all(electors.map((e) => e.stop()));
    await pool?.end();
    await tdb?.drop();
  });

  function elector(holder: string, metrics?: PromRegistry, log = captureLogger().log): LeaderElector {
    const e = new LeaderElector({
      connectionString: tdb.url,
      holder,
      metrics,
      log,
      onLeader: (epoch) => void calls.push(`${holder}:leader:${epoch}`),
      onFollower: (reason) => void calls.push(`${holder}:follower:${reason.split(':')[0]}`),
    });
    electors.push(e);
    return e;
  }

  /**
   * Backend pid holding the leader lock, from pg_locks, in this file's database only: other test files hold the same
   * lock key in their own databases at the same time, and terminating their leader broke their elections.
   */
  async function lockHolderPid(): Promise<number | null> {
    const r = await db.execute<{ pid: number }>(sql`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = ${DEFAULT_LEADER_LOCK_KEY} AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`);
    return r.rows[0]?.pid ?? null;
  }

  it('elects one, steps it down the moment its session is terminated, and hands over with epoch + 1', async () => {
    const metrics = new PromRegistry();
    const cap = captureLogger();
    const a = elector('a', metrics, cap.log);
    a.start();
    await expect.poll(() => a.role(), { timeout: 10_000 }).toBe('leader');
    const e1 = a.epoch()!;
    expect(e1).toBe(1);
    const b = elector('b');
    b.start();
    await new Promise((r) => setTimeout(r, 3 * DEFAULT_LEADER_TIMINGS.pollMs));
    expect(b.role()).toBe('follower');
    expect(b.epoch()).toBeNull();
    expect(a.renewedWithin(DEFAULT_LEADER_TIMINGS.renewMs + DEFAULT_LEADER_TIMINGS.queryTimeoutMs)).toBe(true);
    expect((await readLeader(db))?.holder).toBe('a');

    const pid = await lockHolderPid();
    expect(pid).not.toBeNull();

    // An administrator (or a failover of the database) ends the leader's session: the lock is gone with it.
    const killedAt = performance.now();
    await db.execute(sql`SELECT pg_terminate_backend(${pid})`);
    // Noticed by the client's error event at once, or at worst by the next renew failing: renewMs + queryTimeoutMs,
    // plus a second for a loaded machine's event loop (a 2 s bound flaked at load average 7.5).
    const bound = DEFAULT_LEADER_TIMINGS.renewMs + DEFAULT_LEADER_TIMINGS.queryTimeoutMs + 1000;
    // Watched through its step-down callback, not its role: a reconnects at once and may win the free lock back
    // (before b's next poll) within one 20 ms look at role().
    await expect.poll(() => calls.some((c) => c.startsWith('a:follower:')), { timeout: bound, interval: 20 }).toBe(true);
    const noticedMs = performance.now() - killedAt;
    expect(noticedMs).toBeLessThan(bound);
    await expect.poll(() => [a.epoch(), b.epoch()].find((x) => x !== null) ?? null, { timeout: 5000 }).toBe(e1 + 1);
    expect(calls).toContain('a:leader:1');
    // Which path notices the terminated session first (the client's error event or the failed renew) decides the
    // reason's wording; both count as a lost connection, which the metric below checks.
    expect(calls.some((c) => c.startsWith('a:follower:') && !c.endsWith(':stopped'))).toBe(true);
    expect(cap.lines().some((l) => l.msg === 'stepped down as cluster leader' && l.epoch === 1)).toBe(true);
    const downs = (await metrics.getSingleMetric('apprentice_cluster_step_downs_total')!.get()).values;
    expect(downs.find((v) => v.labels.reason === 'connection')?.value).toBe(1);
  });

  it('stop() steps the leader down and frees the lock for the other at once', async () => {
    const [a, b] = electors as [LeaderElector, LeaderElector];
    const leader = a.role() === 'leader' ? a : b;
    const other = leader === a ? b : a;
    const epoch = leader.epoch()!;
    await leader.stop();
    expect(leader.role()).toBe('stopped');
    expect(calls.at(-1)).toBe(`${leader.holder}:follower:stopped`);
    await expect.poll(() => other.epoch(), { timeout: 3 * DEFAULT_LEADER_TIMINGS.pollMs }).toBe(epoch + 1);
    expect(await readLeader(db)).toMatchObject({ epoch: epoch + 1, holder: other.holder });
  });

  it('keeps polling while PostgreSQL refuses it, logging the first failure once', async () => {
    const cap = captureLogger();
    const bad = new URL(tdb.url);
    bad.pathname = '/apprentice_test_does_not_exist';
    const lost = new LeaderElector({ connectionString: bad.toString(), holder: 'lost', log: cap.log, timings: { pollMs: 100 } });
    electors.push(lost);
    lost.start();
    await new Promise((r) => setTimeout(r, 800));
    expect(lost.role()).toBe('follower');
    const warns = cap.lines().filter((l) => l.msg === 'leader election: cannot reach PostgreSQL, retrying');
    expect(warns).toHaveLength(1);
    expect(String(warns[0]!.err)).toMatch(/does not exist/);
    expect(cap.lines().filter((l) => l.msg === 'leader election: still cannot reach PostgreSQL').length).toBeGreaterThan(0);
  });
});
