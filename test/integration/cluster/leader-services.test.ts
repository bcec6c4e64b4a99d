import { sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { Registry as PromRegistry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_LEADER_LOCK_KEY, LeaderElector } from '../../../cloud/cluster/leader.js';
import { LeaderServices, type LeaderService } from '../../../cloud/cluster/leader-services.js';
import { captureLogger } from '../../helpers/log.js';
import { createThrowawayDb, postgresSkipReason, type ThrowawayDb } from '../../helpers/pg-throwaway.js';

/** A service that records its starts and stops in `trace`, optionally slow or failing to start. */
function service(name: string, trace: string[], o: { startMs?: number; failStart?: boolean } = {}): LeaderService {
  return {
    name,
    async start(epoch) {
      trace.push(`${name}:start:${epoch}`);
      if (o.startMs) await new Promise((r) => setTimeout(r, o.startMs));
      if (o.failStart) throw new Error(`${name} cannot start`);
      trace.push(`${name}:started:${epoch}`);
    },
    stop() {
      trace.push(`${name}:stop`);
    },
  };
}

describe('LeaderServices', () => {
  it('starts the services in order as leader and stops them in reverse as follower', async () => {
    const trace: string[] = [];
    const ls = new LeaderServices([service('engine', trace), service('scheduler', trace)]);
    expect(ls.status()).toEqual({ role: 'follower', epoch: null, running: [] });
    await ls.lead(3);
    expect(ls.status()).toEqual({ role: 'leader', epoch: 3, running: ['engine', 'scheduler'] });
    await ls.follow('lost');
    expect(ls.status()).toEqual({ role: 'follower', epoch: null, running: [] });
    expect(trace).toEqual(['engine:start:3', 'engine:started:3', 'scheduler:start:3', 'scheduler:started:3', 'scheduler:stop', 'engine:stop']);
  });

  it('applies a step-down that arrives mid-start after the start, so nothing keeps running', async () => {
    const trace: string[] = [];
    const ls = new LeaderServices([service('engine', trace, { startMs: 50 })]);
    const leading = ls.lead(1);
    const following = ls.follow('renew failed');
    await Promise.all([leading, following]);
    expect(trace).toEqual(['engine:start:1', 'engine:started:1', 'engine:stop']);
    expect(ls.status().running).toEqual([]);
  });

  it('a service that fails to start stops the ones before it, is logged and counted', async () => {
    const trace: string[] = [];
    const metrics = new PromRegistry();
    const cap = captureLogger();
    const ls = new LeaderServices([service('engine', trace), service('scheduler', trace, { failStart: true })], { log: cap.log, metrics });
    await ls.lead(2);
    expect(trace).toEqual(['engine:start:2', 'engine:started:2', 'scheduler:start:2', 'engine:stop']);
    expect(ls.status()).toEqual({ role: 'leader', epoch: 2, running: [] });
    const failures = (await metrics.getSingleMetric('apprentice_cluster_leader_services_failures_total')!.get()).values;
    expect(failures).toEqual([expect.objectContaining({ labels: { service: 'scheduler', step: 'start' }, value: 1 })]);
    expect(cap.lines().some((l) => String(l.msg).startsWith('cluster/leader-service-start-failed') && l.service === 'scheduler')).toBe(true);
    // The next election starts them all again.
    await ls.lead(3);
    expect(trace.slice(4)).toEqual(['engine:start:3', 'engine:started:3', 'scheduler:start:3', 'engine:stop']);
  });

  it('single() runs everything with role single; stop() stops and ignores later step-downs', async () => {
    const trace: string[] = [];
    const ls = new LeaderServices([service('engine', trace)]);
    await ls.single();
    expect(ls.status()).toEqual({ role: 'single', epoch: null, running: ['engine'] });
    await ls.stop();
    await ls.follow('late');
    expect(ls.status()).toEqual({ role: 'stopped', epoch: null, running: [] });
    expect(trace).toEqual(['engine:start:0', 'engine:started:0', 'engine:stop']);
  });
});

const skip = await postgresSkipReason('the leader services tests on PostgreSQL');

/** Two replicas' electors on a real PostgreSQL: the services run on exactly one, and move when it loses its session. */
describe.skipIf(skip !== undefined)('LeaderServices driven by LeaderElector on PostgreSQL', () => {
  let tdb: ThrowawayDb;
  let pool: pg.Pool;
  const electors: LeaderElector[] = [];

  beforeAll(async () => {
    tdb = await createThrowawayDb();
    pool = new pg.Pool({ connectionString: tdb.url, max: 1 });
  });

  afterAll(async () => {
    await Promise.all(electors.map((e) => e.stop()));
    await pool?.end();
    await tdb?.drop();
  });

  function replica(holder: string, trace: string[]): { elector: LeaderElector; services: LeaderServices } {
    const services = new LeaderServices([service(`${holder}.engine`, trace)]);
    const elector = new LeaderElector({
      connectionString: tdb.url,
      holder,
      log: captureLogger().log,
      onLeader: (epoch) => services.lead(epoch),
      onFollower: (reason) => services.follow(reason),
    });
    electors.push(elector);
    elector.start();
    return { elector, services };
  }

  it('runs the services on the leader only, and under the next epoch on one replica after the leader loses its session', async () => {
    const trace: string[] = [];
    const a = replica('a', trace);
    await expect.poll(() => a.services.status().running, { timeout: 10_000 }).toEqual(['a.engine']);
    const b = replica('b', trace);
    await new Promise((r) => setTimeout(r, 2500));
    expect(b.services.status()).toEqual({ role: 'follower', epoch: null, running: [] });
    const epoch = a.services.status().epoch!;

    // This database's lock only: other test files hold the same key in their own databases at the same time.
    const { rows } = await pool.query<{ pid: number }>(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = $1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`, [DEFAULT_LEADER_LOCK_KEY]);
    await drizzle(pool).execute(sql`SELECT pg_terminate_backend(${rows[0]!.pid})`);

    // Either replica may win the next election (a reconnects and polls too); exactly one runs the services.
    const next = epoch + 1;
    const leaderOf = () => [a, b].find((r) => r.services.status().epoch === next);
    await expect.poll(() => leaderOf()?.services.status().running.length, { timeout: 10_000 }).toBe(1);
    const winner = leaderOf()!;
    const loser = winner === a ? b : a;
    expect(loser.services.status()).toEqual({ role: 'follower', epoch: null, running: [] });
    expect(winner.services.status()).toEqual({ role: 'leader', epoch: next, running: [`${winner.elector.holder}.engine`] });
    // a's engine was stopped when its session ended, before anything started under the next epoch.
    const stopAt = trace.indexOf('a.engine:stop');
    expect(stopAt).toBeGreaterThan(-1);
    expect(trace.findIndex((t) => t.endsWith(`:start:${next}`))).toBeGreaterThan(stopAt);
    expect(trace.filter((t) => t.endsWith(`:started:${next}`))).toHaveLength(1);
  });
});
