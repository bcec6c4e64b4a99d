import { bigint, index, pgTable, text } from 'drizzle-orm/pg-core';
import { describe, expect, it } from 'vitest';
import * as clusterPg from '../../../cloud/cluster/schema-pg.js';
import * as registryPg from '../../../cloud/registry/schema-pg.js';
import * as registrySqlite from '../../../cloud/registry/schema.js';
import pgConfig from '../../../drizzle.pg.config.js';
import { shapeDiff, shapeOf, tablesOf } from '../../helpers/schema-shape.js';

/** Modules of drizzle.pg.config.ts whose tables exist on PostgreSQL only, by design (leader election). */
const PG_ONLY_MODULES = ['./cloud/cluster/schema-pg.ts'];

describe('registry schema drift (issue 15): SQLite and PostgreSQL twins', () => {
  const sqliteShape = shapeOf(tablesOf(registrySqlite));
  const pgShape = shapeOf(tablesOf(registryPg));

  it('drizzle.pg.config.ts generates from the registry twin plus the pg-only modules, nothing else', () => {
    const cfg = pgConfig as { schema?: string | string[] };
    expect(cfg.schema).toEqual(['./cloud/registry/schema-pg.ts', ...PG_ONLY_MODULES]);
  });

  it('pg-only tables do not shadow a registry table', () => {
    const pgOnly = Object.keys(shapeOf(tablesOf(clusterPg)));
    for (const t of pgOnly) expect(Object.keys(sqliteShape), `cluster table ${t} has a registry name`).not.toContain(t);
  });

  it('has the same tables, columns, nullability, keys and indexes on both dialects', () => {
    expect(Object.keys(sqliteShape).length).toBeGreaterThanOrEqual(18);
    expect(shapeDiff(sqliteShape, pgShape)).toEqual([]);
  });

  it('notices drift: a mutated table list is reported', () => {
    // The pg audit_log with one column renamed, one nullability flipped, an index dropped, plus an extra table.
    const mutated = pgTable(
      'audit_log',
      {
        id: bigint('id', { mode: 'number' }).primaryKey(),
        at: text('at').notNull(),
        actor: text('actor'),
        verb: text('action').notNull(),
        target: text('target_id'),
        detail: text('detail'),
      },
      () => [],
    );
    const extra = pgTable('stray', { k: text('k').primaryKey() }, (t) => [index('stray_k_idx').on(t.k)]);
    const tables = tablesOf(registryPg).filter((t) => t !== registryPg.auditLog);
    const diff = shapeDiff(sqliteShape, shapeOf([...tables, mutated, extra]));
    expect(diff).toEqual(
      expect.arrayContaining([
        'table audit_log columns: target only in sqlite',
        'table audit_log columns: target_id only in pg',
        'table audit_log notNull: actor only in sqlite',
        'table audit_log indexes: audit_log_at_idx(at) only in sqlite',
        'table stray: only in pg',
      ]),
    );
    expect(diff).toHaveLength(5);
  });
});
