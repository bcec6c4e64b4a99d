/**
 * Runs a test file's registry cases on both dialects (issue 15): SQLite in memory, and PostgreSQL in a
 * throwaway database of this file (CREATE DATABASE apprentice_test_<random>, dropped after the file, failed
 * or not). Tests start from empty tables: the PostgreSQL ones are truncated before each.
 *
 * Without a reachable PostgreSQL the postgres cases are skipped, saying why, unless
 * APPRENTICE_REQUIRE_POSTGRES=1 (CI), which makes them fail. APPRENTICE_TEST_PG_URL points at another server
 * (default postgres://postgres@127.0.0.1:5432/postgres, the maintenance database of a local PostgreSQL 15).
 *
 * @example
 * const dialects = registryDialects();
 * describe.each(dialects)('audit store on $name', (d) => {
 *   let reg: StoreRegistry;
 *   beforeEach(async (ctx) => { reg = await d.open(ctx); });
 *   afterEach(() => d.close());
 *   it('...', async () => { ... });
 * });
 */
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { afterAll } from 'vitest';
import type { StoreRegistry } from '../../cloud/registry/open.js';
import type { PgRegistry } from '../../cloud/registry/pg.js';
import { openRegistry } from '../../cloud/registry/open.js';
import { ADMIN_URL, REQUIRE_POSTGRES_ENV, admin, databaseUrl, throwawayName } from './pg-throwaway.js';

export { REQUIRE_POSTGRES_ENV };

export interface DialectCase {
  readonly name: 'sqlite' | 'postgres';
  /** A registry with empty tables; skips the test (or throws when PostgreSQL is required) if unavailable. */
  open(ctx: { skip: (note?: string) => void }): Promise<StoreRegistry>;
  /** Closes what `open` returned (call in afterEach). */
  close(): Promise<void>;
  /** Another connection to the same database (e.g. a second replica), closed by `close` too. */
  openAnother(): Promise<StoreRegistry>;
  /** postgres only: the URL of this file's database before any registry opened it (migrations not applied). */
  url?(ctx: { skip: (note?: string) => void }): Promise<string>;
}

const reported = new Set<string>();
function warnOnce(msg: string): void {
  if (!reported.has(msg)) console.warn(`[test/helpers/dialects] ${msg}`);
  reported.add(msg);
}

/** The two dialect cases of one test file; call once at the top level of the file (it registers the drop). */
export function registryDialects(): DialectCase[] {
  const open: StoreRegistry[] = [];
  const closeAll = async () => {
    for (const r of open.splice(0)) await r.close();
  };
  let file: string | undefined;
  const sqlite: DialectCase = {
    name: 'sqlite',
    // A temp file, not :memory:, so openAnother reaches the same database.
    open: async () => {
      file = `${tmpdir()}/apprentice-test-${randomBytes(6).toString('hex')}.db`;
      const r = await openRegistry({ path: file });
      open.push(r);
      return r;
    },
    openAnother: async () => {
      const r = await openRegistry({ path: file! });
      open.push(r);
      return r;
    },
    close: async () => {
      await closeAll();
      if (file) for (const f of [file, `${file}-wal`, `${file}-shm`]) await rm(f, { force: true });
      file = undefined;
    },
  };

  let dbName: string | undefined;
  let unavailable: string | undefined;
  let template: PgRegistry | undefined;
  const create = async (): Promise<string> => {
    if (dbName) return dbName;
    const name = throwawayName();
    await admin(`CREATE DATABASE ${name}`);
    dbName = name;
    return name;
  };
  afterAll(async () => {
    await closeAll();
    await template?.close();
    if (dbName) await admin(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
  });
  /** This file's database, created on first use, not migrated yet; skips (or throws) when PostgreSQL is unreachable. */
  const emptyDatabase = async (ctx: { skip: (note?: string) => void }): Promise<string> => {
    if (unavailable === undefined) {
      try {
        await create();
        unavailable = '';
      } catch (err) {
        unavailable = `PostgreSQL unreachable at ${new URL(ADMIN_URL).host} (${(err as Error).message})`;
      }
    }
    if (unavailable) {
      if (process.env[REQUIRE_POSTGRES_ENV] === '1') throw new Error(`${unavailable}; ${REQUIRE_POSTGRES_ENV}=1 requires it`);
      warnOnce(`skipping postgres cases: ${unavailable}; ${REQUIRE_POSTGRES_ENV}=1 makes that a failure`);
      ctx.skip(unavailable);
    }
    return databaseUrl(dbName!);
  };
  const postgres: DialectCase = {
    url: emptyDatabase,
    name: 'postgres',
    open: async (ctx) => {
      await emptyDatabase(ctx);
      // Migrations are applied once; each test then starts from empty tables.
      template ??= (await openRegistry({ url: databaseUrl(dbName!) })) as PgRegistry;
      const { rows } = await template.pool.query<{ t: string }>(`select tablename as t from pg_tables where schemaname = 'public'`);
      if (rows.length > 0) await template.pool.query(`TRUNCATE ${rows.map((r) => `"${r.t}"`).join(', ')} RESTART IDENTITY CASCADE`);
      return postgres.openAnother();
    },
    openAnother: async () => {
      const r = await openRegistry({ url: databaseUrl(dbName!) });
      open.push(r);
      return r;
    },
    close: closeAll,
  };
  return [sqlite, postgres];
}
