import { sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StaleLeaderError, openFence, type Fence } from '../../../cloud/cluster/fence.js';
import { DEFAULT_LEADER_TIMINGS } from '../../../cloud/cluster/leader.js';
import { readLeader, type ClusterDb } from '../../../cloud/cluster/store.js';
import { Replica, nextLeader } from '../../helpers/cluster-replicas.js';
import { createThrowawayDb, postgresSkipReason, type ThrowawayDb } from '../../helpers/pg-throwaway.js';

/**
 * Issue 15 items 4 and 6 with real processes and a real PostgreSQL: three replicas (test/helpers/cluster-replica-process.ts)
 * elect a leader; kill -9 of the leader and SIGSTOP of the next one both hand leadership to another
 * replica within 15 s under a higher epoch, and the old epoch is refused by the fence.
 */
const TAKEOVER_BOUND_MS = 15_000;

const skip = await postgresSkipReason('the leader failover tests (3 replica processes)');

describe.skipIf(skip !== undefined)('cluster leader failover: 3 replica processes on PostgreSQL', () => {
  let tdb: ThrowawayDb;
  let fence: Fence;
  let closeFence: () => Promise<void>;
  let pool: pg.Pool;
  let db: ClusterDb;
  let replicas: Replica[] = [];

  beforeAll(async () => {
    tdb = await createThrowawayDb();
    ({ fence, close: closeFence } = openFence(tdb.url));
    pool = new pg.Pool({ connectionString: tdb.url, max: 2 });
    db = drizzle(pool);
    await db.execute(sql`CREATE TABLE leader_writes (id bigserial PRIMARY KEY, epoch bigint NOT NULL, holder text NOT NULL)`);
    replicas = ['r1', 'r2', 'r3'].map((n) => new Replica(n, tdb.url));
  });

  afterAll(async () => {
    for (const r of replicas) {
      r.signal('SIGCONT');
      r.signal('SIGKILL');
    }
    await closeFence?.();
    await pool?.end();
    await tdb?.drop();
  });

  /** Every fenced write the cluster committed: old epochs all before newer ones, never interleaved. */
  async function assertWritesOrderedByEpoch(): Promise<void> {
    const rows = (await db.execute<{ epoch: string; first: string; last: string }>(sql`SELECT epoch, min(id) AS first, max(id) AS last FROM leader_writes GROUP BY epoch ORDER BY epoch`)).rows;
    for (let i = 1; i < rows.length; i++) expect(Number(rows[i]!.first)).toBeGreaterThan(Number(rows[i - 1]!.last));
  }

  async function writesOf(epoch: number): Promise<number> {
    return Number((await db.execute<{ n: string }>(sql`SELECT count(*) AS n FROM leader_writes WHERE epoch = ${epoch}`)).rows[0]!.n);
  }

  it('elects exactly one leader; kill -9 of it hands leadership to another within 15 s with a higher epoch, and its epoch is fenced', async () => {
    // Three `node --import tsx` processes start slowly on 2 busy cores: the startup is not what is measured.
    const first = await nextLeader(replicas, 0, 120_000);
    // Give the followers several polls to prove they stay followers while the leader lives.
    await new Promise((r) => setTimeout(r, 3 * DEFAULT_LEADER_TIMINGS.pollMs));
    expect(replicas.flatMap((r) => r.leaderEvents())).toHaveLength(1);
    expect((await readLeader(db))).toMatchObject({ epoch: first.e.epoch, holder: first.r.name });
    expect(await writesOf(first.e.epoch!)).toBeGreaterThan(0);

    const killedAt = Date.now();
    first.r.signal('SIGKILL');
    const rest = replicas.filter((r) => r !== first.r);
    const second = await nextLeader(rest, first.e.epoch!, 30_000);
    const takeoverMs = second.e.t - killedAt;
    console.log(`kill -9 takeover: ${takeoverMs} ms (epoch ${first.e.epoch} -> ${second.e.epoch})`);
    expect(takeoverMs).toBeLessThan(TAKEOVER_BOUND_MS);
    expect(second.e.epoch).toBe(first.e.epoch! + 1);

    const err = await fence.check(first.e.epoch!, 'round.sign').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StaleLeaderError);
    expect(err).toMatchObject({ myEpoch: first.e.epoch, currentEpoch: second.e.epoch });
    await expect(fence.write(first.e.epoch!, 'rollout.step', async () => 'written')).rejects.toBeInstanceOf(StaleLeaderError);
    await second.r.next((e) => e.ev === 'leader', 1000, 'leader');
    await expect.poll(() => writesOf(second.e.epoch!), { timeout: 5000 }).toBeGreaterThan(0);
    await assertWritesOrderedByEpoch();
  }, 180_000);

  it('a paused (SIGSTOP) leader loses leadership within 15 s, and on SIGCONT finds itself fenced and steps down', async () => {
    const current = (await readLeader(db))!;
    const paused = replicas.find((r) => r.name === current.holder)!;
    const other = replicas.find((r) => r !== paused && r.child.exitCode === null && r.child.signalCode === null)!;

    const stoppedAt = Date.now();
    paused.signal('SIGSTOP');
    const next = await nextLeader([other], current.epoch, 30_000);
    const takeoverMs = next.e.t - stoppedAt;
    console.log(`SIGSTOP takeover: ${takeoverMs} ms (epoch ${current.epoch} -> ${next.e.epoch}; idle_session_timeout ${DEFAULT_LEADER_TIMINGS.sessionIdleTimeoutMs} ms)`);
    expect(takeoverMs).toBeLessThan(TAKEOVER_BOUND_MS);
    expect(next.e.epoch).toBe(current.epoch + 1);
    // While it is paused the old leader still believes it leads (it cannot run): nothing it said changed.
    expect(paused.events.filter((e) => e.ev === 'follower')).toHaveLength(0);

    const resumedAt = Date.now();
    paused.signal('SIGCONT');
    const down = await paused.next((e) => e.ev === 'follower', 10_000, 'step-down after SIGCONT');
    console.log(`resumed leader stepped down after ${down.t - resumedAt} ms: ${down.reason}`);
    expect(down.t - resumedAt).toBeLessThan(DEFAULT_LEADER_TIMINGS.renewMs + DEFAULT_LEADER_TIMINGS.queryTimeoutMs + 1000);
    // Any write it attempted after waking was refused, none landed after the takeover.
    for (const f of paused.events.filter((e) => e.ev === 'fenced')) expect(f).toMatchObject({ epoch: current.epoch, currentEpoch: next.e.epoch });
    await expect.poll(() => writesOf(next.e.epoch!), { timeout: 5000 }).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 2 * DEFAULT_LEADER_TIMINGS.pollMs));
    await assertWritesOrderedByEpoch();
    // A fenced transaction the pause caught half-way was ended by the server (idle_in_transaction_session_timeout):
    // it failed rather than committed (drizzle may report the failed ROLLBACK on the dead connection instead);
    // any other kind of write failure would be a bug.
    for (const w of paused.events.filter((e) => e.ev === 'write-error')) {
      console.log(`paused leader's in-flight write failed: ${w.err}`);
      expect(w.err).toMatch(/idle-in-transaction|terminat|connection error/i);
    }
    // It stays a follower: one leader at a time.
    expect(paused.leaderEvents()).toHaveLength(1);
    expect((await readLeader(db))).toMatchObject({ epoch: next.e.epoch, holder: other.name });
  });
});
