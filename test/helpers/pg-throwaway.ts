/**
 * Throwaway PostgreSQL databases for tests (issue 15): `apprentice_test_<random>` created on the server at
 * APPRENTICE_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres, the maintenance database of a
 * local PostgreSQL 15), migrated with the committed pg migrations, dropped WITH (FORCE) at the end even when
 * sessions (a killed or paused replica's) are still open. The one home of the test server's address and admin
 * statements; ./dialects.ts builds its per-file dialect cases on it.
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { drizzle } from 'drizzle-orm/node-postgres';
import { migrate } from 'drizzle-orm/node-postgres/migrator';
import pg from 'pg';

/** CI sets this so an unreachable PostgreSQL fails the run instead of silently skipping. */
export const REQUIRE_POSTGRES_ENV = 'APPRENTICE_REQUIRE_POSTGRES';

export const ADMIN_URL = process.env.APPRENTICE_TEST_PG_URL || 'postgres://postgres@127.0.0.1:5432/postgres';

export const PG_MIGRATIONS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../cloud/registry/migrations-pg');

/**
 * Undefined when PostgreSQL answers; else why not. Throws (failing the file) when
 * APPRENTICE_REQUIRE_POSTGRES=1; otherwise prints the reason the caller's tests are skipped.
 */
export async function postgresSkipReason(what: string): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: ADMIN_URL, connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
    return undefined;
  } catch (err) {
    const reason = `PostgreSQL unreachable at ${redact(ADMIN_URL)}: ${err instanceof Error ? err.message : String(err)}`;
    if (process.env[REQUIRE_POSTGRES_ENV] === '1') throw new Error(`${reason} (${REQUIRE_POSTGRES_ENV}=1, so ${what} must run)`);
    console.warn(`skipping ${what}: ${reason} (set ${REQUIRE_POSTGRES_ENV}=1 to fail instead)`);
    return reason;
  } finally {
    await client.end().catch(() => undefined);
  }
}

export interface ThrowawayDb {
  name: string;
  url: string;
  drop: () => Promise<void>;
}

/** A fresh `apprentice_test_<random>` name. */
export function throwawayName(): string {
  return `apprentice_test_${randomBytes(6).toString('hex')}`;
}

/** The URL of database `name` on the test server. */
export function databaseUrl(name: string): string {
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Creates an empty database and applies the pg migrations to it. */
export async function createThrowawayDb(): Promise<ThrowawayDb> {
  const name = throwawayName();
  await admin(`CREATE DATABASE ${name}`);
  const db: ThrowawayDb = { name, url: databaseUrl(name), drop: () => admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
  const pool = new pg.Pool({ connectionString: db.url, max: 1 });
  try {
    await migrate(drizzle(pool), { migrationsFolder: PG_MIGRATIONS });
  } catch (err) {
    await pool.end().catch(() => undefined);
    await db.drop();
    throw err;
  }
  await pool.end();
  return db;
}

/** Runs one statement on the test server's maintenance database (CREATE/DROP DATABASE). */
export async function admin(statement: string): Promise<void> {
  const client = new pg.Client({ connectionString: ADMIN_URL, connectionTimeoutMillis: 5000 });
  await client.connect();
  try {
    await client.query(statement);
  } finally {
    await client.end();
  }
}

function redact(url: string): string {
  const u = new URL(url);
  if (u.password) u.password = '***';
  return u.toString();
}
