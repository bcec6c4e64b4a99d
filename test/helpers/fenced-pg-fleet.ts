/**
 * The setup of a test of fenced leader writes on PostgreSQL (issue 15): a throwaway database with the registry
 * open on it, a Fence on its own small pool (counting refusals in `metrics`, logging to `captured`), and the
 * small cluster fleet of ./cluster-fleet.ts (model, releases 1 and 2, `devices` online running 1). Registers
 * its own beforeAll / afterAll (call at describe level); `skip` says why PostgreSQL is unavailable.
 *
 * @example
 * const env = fencedPgFleet('the fenced rollout engine', 'leader-writes', ['d1', 'd2']);
 * it('...', async (ctx) => { if (env.skip) return ctx.skip(env.skip); ... env.reg ... env.fence ... });
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { Registry as PromRegistry } from 'prom-client';
import { afterAll, beforeAll } from 'vitest';
import { Fence } from '../../cloud/cluster/fence.js';
import { openRegistry, type StoreRegistry } from '../../cloud/registry/open.js';
import { FleetFixture } from '../unit/fleet/fixtures.js';
import { seedClusterFleet } from './cluster-fleet.js';
import { captureLogger } from './log.js';
import { createThrowawayDb, postgresSkipReason, type ThrowawayDb } from './pg-throwaway.js';

export interface FencedPgFleet {
  readonly dir: string;
  readonly fx: FleetFixture;
  readonly metrics: PromRegistry;
  readonly captured: ReturnType<typeof captureLogger>;
  /** Why PostgreSQL is unavailable (then the rest is unset). */
  skip: string | undefined;
  db: ThrowawayDb | undefined;
  reg: StoreRegistry;
  /** A second pool on the same database (bumpEpoch as another replica would). */
  pool: pg.Pool;
  fence: Fence;
  /** Stopped before the registry closes. */
  readonly stopping: (() => Promise<void> | void)[];
}

export function fencedPgFleet(what: string, name: string, devices: readonly string[]): FencedPgFleet {
  const dir = mkdtempSync(join(tmpdir(), `apprentice-${name}-`));
  const env = {
    dir,
    fx: new FleetFixture(join(dir, 'fixture')),
    metrics: new PromRegistry(),
    captured: captureLogger(),
    skip: undefined,
    db: undefined,
    stopping: [],
  } as unknown as FencedPgFleet;
  beforeAll(async () => {
    env.skip = await postgresSkipReason(what);
    if (env.skip) return;
    env.db = await createThrowawayDb();
    env.reg = await openRegistry({ url: env.db.url, poolSize: 4 });
    env.pool = new pg.Pool({ connectionString: env.db.url, max: 2 });
    env.fence = new Fence({ db: drizzle(env.pool), metrics: env.metrics, log: env.captured.log });
    await seedClusterFleet(env.reg, env.fx, dir, devices);
  });
  afterAll(async () => {
    for (const stop of env.stopping) await stop();
    await env.reg?.close();
    await env.pool?.end();
    await env.db?.drop();
    env.fx.dispose();
    rmSync(dir, { recursive: true, force: true });
  });
  return env;
}
