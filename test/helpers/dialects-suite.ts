import type { StoreRegistry } from '../../cloud/registry/open.js';
import type { DialectCase } from './dialects.js';

class Unavailable extends Error {}

/**
 * Opens a dialect's registry once for a whole suite, in a beforeAll (which has no test context to skip):
 * returns the registry, or why the dialect is unavailable (then skip each test with it, in a beforeEach).
 * With APPRENTICE_REQUIRE_POSTGRES=1 an unreachable PostgreSQL throws instead, as in DialectCase.open.
 *
 * @example
 * beforeAll(async () => { const o = await openForSuite(d); if (typeof o === 'string') unavailable = o; else registry = o; });
 * beforeEach((ctx) => { if (unavailable) ctx.skip(unavailable); });
 */
export async function openForSuite(d: DialectCase): Promise<StoreRegistry | string> {
  try {
    return await d.open({
      skip: (note) => {
        throw new Unavailable(note);
      },
    });
  } catch (err) {
    if (err instanceof Unavailable) return err.message;
    throw err;
  }
}
