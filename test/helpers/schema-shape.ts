import { is } from 'drizzle-orm';
import { getTableConfig as pgTableConfig, PgTable } from 'drizzle-orm/pg-core';
import { getTableConfig as sqliteTableConfig, SQLiteTable } from 'drizzle-orm/sqlite-core';

/**
 * The dialect-neutral shape of a drizzle schema module: what must match between the SQLite registry schema
 * and its PostgreSQL twin (issue 15). Column types differ by design (bigint ⇄ integer, json ⇄ text...);
 * names, nullability, primary keys, foreign keys and indexes must not.
 */
export interface TableShape {
  columns: string[];
  notNull: string[];
  primaryKey: string[];
  foreignKeys: string[];
  indexes: string[];
}
export type SchemaShape = Record<string, TableShape>;

const nameOf = (c: unknown): string => (c && typeof c === 'object' && 'name' in c ? String((c as { name: unknown }).name) : '<expression>');

/** The tables a module exports (any dialect). */
export function tablesOf(mod: Record<string, unknown>): unknown[] {
  return Object.values(mod).filter((v) => is(v, SQLiteTable) || is(v, PgTable));
}

export function shapeOf(tables: readonly unknown[]): SchemaShape {
  const out: SchemaShape = {};
  for (const t of tables) {
    const cfg = is(t, PgTable) ? pgTableConfig(t) : is(t, SQLiteTable) ? sqliteTableConfig(t) : undefined;
    if (!cfg) throw new Error('not a drizzle table');
    const cols = cfg.columns as { name: string; notNull: boolean; primary: boolean }[];
    const composite = cfg.primaryKeys.flatMap((pk) => (pk.columns as { name: string }[]).map((c) => c.name));
    out[cfg.name] = {
      columns: cols.map((c) => c.name).sort(),
      notNull: cols.filter((c) => c.notNull).map((c) => c.name).sort(),
      primaryKey: [...cols.filter((c) => c.primary).map((c) => c.name), ...composite].sort(),
      foreignKeys: cfg.foreignKeys
        .map((fk) => {
          const r = fk.reference() as { columns: { name: string }[]; foreignColumns: { name: string }[]; foreignTable: unknown };
          const ft = is(r.foreignTable, PgTable) ? pgTableConfig(r.foreignTable).name : sqliteTableConfig(r.foreignTable as SQLiteTable).name;
          return `${r.columns.map((c) => c.name).join(',')} -> ${ft}(${r.foreignColumns.map((c) => c.name).join(',')})`;
        })
        .sort(),
      indexes: (cfg.indexes as { config: { name?: string; columns: unknown[]; unique: boolean } }[])
        .map((i) => `${i.config.unique ? 'unique ' : ''}${i.config.name ?? '<unnamed>'}(${i.config.columns.map(nameOf).join(',')})`)
        .sort(),
    };
  }
  return out;
}

/** Every difference between two shapes, one line each (empty when they match). */
export function shapeDiff(a: SchemaShape, b: SchemaShape, names: [string, string] = ['sqlite', 'pg']): string[] {
  const out: string[] = [];
  for (const t of new Set([...Object.keys(a), ...Object.keys(b)])) {
    if (!a[t] || !b[t]) {
      out.push(`table ${t}: only in ${a[t] ? names[0] : names[1]}`);
      continue;
    }
    for (const k of Object.keys(a[t]) as (keyof TableShape)[]) {
      const x = new Set(a[t][k]);
      const y = new Set(b[t][k]);
      for (const v of x) if (!y.has(v)) out.push(`table ${t} ${k}: ${v} only in ${names[0]}`);
      for (const v of y) if (!x.has(v)) out.push(`table ${t} ${k}: ${v} only in ${names[1]}`);
    }
  }
  return out;
}
