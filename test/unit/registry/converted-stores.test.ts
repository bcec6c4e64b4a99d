import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

/**
 * Store modules converted to the dialect-agnostic pattern (issue 15). Add a file here when converting it;
 * the next sessions fan out over the rest (see the list in notes/h15a.md).
 */
export const CONVERTED_STORES = [
  'cloud/audit/store.ts',
  'cloud/fleet/events-store.ts',
  'cloud/ui/secret-store.ts',
  'cloud/rollouts/notes.ts',
  // h15a: fleet, ingest, provisioning, console data, example retention.
  'cloud/fleet/ingest.ts',
  'cloud/fleet/example-commit.ts',
  'cloud/fleet/ingest-counts.ts',
  'cloud/fleet/device-state-writer.ts',
  'cloud/fleet/telemetry-history.ts',
  'cloud/fleet/device-compat.ts',
  'cloud/fleet/receipts.ts',
  'cloud/fleet/device-query.ts',
  'cloud/fleet/rollout-progress.ts',
  'cloud/fleet/publisher.ts',
  'cloud/fleet/broker-auth.ts',
  'cloud/fleet/retention.ts',
  'cloud/provision/broker-auth.ts',
  'cloud/provision/reload.ts',
  'cloud/registry/retention.ts',
  'cloud/registry/retention-job.ts',
  'cloud/ui/examples-store.ts',
];

/** What only SQLite runs: better-sqlite3's synchronous executors, the raw handle, drizzle's SQLite database. */
const SQLITE_ONLY = [/\.(all|get|run|values)\(\s*\)/, /\.sqlite\b/, /\breg(istry)?\.db\b/, /\bdb\.transaction\(/];

/** Strips comments so a store may explain itself. */
const code = (src: string) => src.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');

export function sqliteOnlyCalls(src: string): string[] {
  return code(src)
    .split('\n')
    .filter((l) => SQLITE_ONLY.some((re) => re.test(l)))
    .map((l) => l.trim());
}

describe('stores converted to both dialects', () => {
  it.each(CONVERTED_STORES)('%s executes statements only by awaiting them or through reg.tx', (file) => {
    const src = readFileSync(file, 'utf8');
    expect(sqliteOnlyCalls(src)).toEqual([]);
    // Takes the registry of either dialect, or gives transaction steps (a body's part) to compose.
    expect(src).toMatch(/StoreRegistry|function\* \w+\(tx: TxDb, t: Tables/);
  });

  it('the check finds SQLite-only calls', () => {
    const bad = `const r = reg.db.select().from(t).all();\n// reg.db in a comment is fine\nreg.q.insert(t).values(v).run();\nawait reg.q.select().from(t);`;
    expect(sqliteOnlyCalls(bad)).toEqual(['const r = reg.db.select().from(t).all();', 'reg.q.insert(t).values(v).run();']);
  });
});
