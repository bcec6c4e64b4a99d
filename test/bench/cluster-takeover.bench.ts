/**
 * Leader takeover bench (issue 15 item 4, "takeover within 15 s of the leader's death"):
 * `node --import tsx test/bench/cluster-takeover.bench.ts`. Three replica processes
 * (test/helpers/cluster-replica-process.ts: LeaderElector with the default timings, a fenced write every
 * 100 ms while leader) on a throwaway PostgreSQL database.
 * - BENCH_KILLS (default 5) rounds of kill -9 of the leader: ms from the signal to another replica's
 *   "leader" line; the killed replica is restarted so three run again.
 * - BENCH_STOPS (default 3) rounds of SIGSTOP of the leader: ms from the signal to another's "leader"
 *   line, then SIGCONT: ms until the paused one reports it stepped down.
 * After each round, the fenced writes are checked to be ordered by epoch (no stale write landed after a
 * takeover). Results: test/bench/results/cluster-takeover.json.
 */
import { sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { DEFAULT_LEADER_TIMINGS } from '../../cloud/cluster/leader.js';
import { readLeader } from '../../cloud/cluster/store.js';
import { Replica, nextLeader } from '../helpers/cluster-replicas.js';
import { createThrowawayDb, postgresSkipReason } from '../helpers/pg-throwaway.js';
import { writeBenchResult } from './common.js';

const KILLS = Number(process.env.BENCH_KILLS ?? '5');
const STOPS = Number(process.env.BENCH_STOPS ?? '3');
const log = (m: string): void => void process.stderr.write(`[cluster-takeover] ${m}\n`);

function stats(xs: number[]): { n: number; min: number; median: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  return { n: s.length, min: s[0] ?? NaN, median: s[Math.floor(s.length / 2)] ?? NaN, max: s.at(-1) ?? NaN };
}

async function main(): Promise<void> {
  const skip = await postgresSkipReason('the cluster takeover bench');
  if (skip) process.exit(1);
  const tdb = await createThrowawayDb();
  const pool = new pg.Pool({ connectionString: tdb.url, max: 2 });
  const db = drizzle(pool);
  await db.execute(sql`CREATE TABLE leader_writes (id bigserial PRIMARY KEY, epoch bigint NOT NULL, holder text NOT NULL)`);
  let replicas = ['r1', 'r2', 'r3'].map((n) => new Replica(n, tdb.url));
  const kills: number[] = [];
  const stops: number[] = [];
  const stepDowns: number[] = [];
  let misordered = 0;

  const alive = () => replicas.filter((r) => r.child.exitCode === null && r.child.signalCode === null);
  const current = async () => {
    const row = (await readLeader(db))!;
    return { row, replica: replicas.find((r) => r.name === row.holder && alive().includes(r))! };
  };
  const checkOrder = async () => {
    const rows = (await db.execute<{ first: string; last: string }>(sql`SELECT min(id) AS first, max(id) AS last FROM leader_writes GROUP BY epoch ORDER BY epoch`)).rows;
    for (let i = 1; i < rows.length; i++) if (Number(rows[i]!.first) <= Number(rows[i - 1]!.last)) misordered++;
  };

  try {
    await nextLeader(replicas, 0, 180_000);
    for (let i = 0; i < KILLS; i++) {
      await new Promise((r) => setTimeout(r, 2000));
      const { row, replica } = await current();
      const at = Date.now();
      replica.signal('SIGKILL');
      const next = await nextLeader(alive().filter((r) => r !== replica), row.epoch, 30_000);
      kills.push(next.e.t - at);
      log(`kill -9 ${replica.name} (epoch ${row.epoch}) -> ${next.r.name} epoch ${next.e.epoch} after ${next.e.t - at} ms`);
      replicas = replicas.map((r) => (r === replica ? new Replica(`${r.name}+`, tdb.url) : r));
      await Promise.all(replicas.map((r) => r.next((e) => e.ev === 'ready', 180_000, 'ready')));
      await checkOrder();
    }
    for (let i = 0; i < STOPS; i++) {
      await new Promise((r) => setTimeout(r, 2000));
      const { row, replica } = await current();
      const at = Date.now();
      replica.signal('SIGSTOP');
      const next = await nextLeader(alive().filter((r) => r !== replica), row.epoch, 30_000);
      stops.push(next.e.t - at);
      const resumed = Date.now();
      const already = replica.events.length;
      replica.signal('SIGCONT');
      const down = await replica.next((e) => e.ev === 'follower' && replica.events.indexOf(e) >= already, 15_000, 'step-down');
      stepDowns.push(down.t - resumed);
      log(`SIGSTOP ${replica.name} (epoch ${row.epoch}) -> ${next.r.name} epoch ${next.e.epoch} after ${next.e.t - at} ms; stepped down ${down.t - resumed} ms after SIGCONT`);
      await new Promise((r) => setTimeout(r, 1000));
      await checkOrder();
    }
  } finally {
    for (const r of replicas) {
      r.signal('SIGCONT');
      r.signal('SIGKILL');
    }
    await pool.end();
    await tdb.drop();
  }

  const file = writeBenchResult('cluster-takeover', {
    timings: DEFAULT_LEADER_TIMINGS,
    boundMs: 15_000,
    killTakeoverMs: { ...stats(kills), samples: kills },
    sigstopTakeoverMs: { ...stats(stops), samples: stops },
    stepDownAfterSigcontMs: { ...stats(stepDowns), samples: stepDowns },
    staleWritesAfterTakeover: misordered,
    note: 'ms from the signal to the new leader\'s "leader" stdout line (3 replica processes, one PostgreSQL 15, 2 shared cores)',
  });
  log(`wrote ${file}`);
  if (misordered > 0 || [...kills, ...stops].some((ms) => ms >= 15_000)) process.exit(1);
}

await main();
