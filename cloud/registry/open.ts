import type { Logger } from '../../shared/log/index.js';
import { Registry } from './db.js';
import { PgRegistry } from './pg.js';

/**
 * The registry of either dialect, as stores see it (issue 15): `dialect`, the tables `t`, the query builder
 * `q` for single awaited statements, `tx` for transaction bodies (./tx.ts), and `close`.
 */
export type StoreRegistry = Registry | PgRegistry;

export type OpenRegistryOptions = { url: string; poolSize?: number; log?: Logger } | { path: string; busyTimeoutMs?: number };

/**
 * Opens the registry: PostgreSQL for `{ url }` (postgres:// or postgresql://), SQLite for `{ path }`.
 * Migrations are applied at open on both.
 *
 * @example
 * const reg = await openRegistry(cfg.registry.url ? { url: cfg.registry.url } : { path: join(dataDir, 'registry.db') });
 */
export async function openRegistry(o: OpenRegistryOptions): Promise<StoreRegistry> {
  if ('url' in o) {
    if (!/^postgres(ql)?:\/\//.test(o.url)) throw new Error('registry: url must start with postgres:// or postgresql://');
    return PgRegistry.open(o);
  }
  return Registry.open(o.path, { busyTimeoutMs: o.busyTimeoutMs });
}
