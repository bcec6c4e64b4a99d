import type { Registry } from '../../cloud/registry/db.js';
import type { StoreRegistry } from '../../cloud/registry/open.js';

/**
 * The cloud's registry as SQLite's own `Registry`, for harnesses that read it synchronously (`.db ... .get()`)
 * while the cloud runs on SQLite under its data dir. Throws on PostgreSQL: such a test must use `q`/`t`.
 */
export function sqliteRegistry(reg: StoreRegistry): Registry {
  if (reg.dialect !== 'sqlite') throw new Error(`this harness reads the registry synchronously (SQLite); the cloud runs on ${reg.dialect}`);
  return reg;
}
