import { randomBytes } from 'node:crypto';
import { eq, like } from 'drizzle-orm';
import type { StoreRegistry } from '../registry/open.js';
import { q } from '../registry/tx.js';

const SECRET_KEY = 'ui.session-secret';
const REVOKED_PREFIX = 'ui.logout.';

/**
 * The console's session state in the registry (the `meta` table), so every replica signs and checks
 * cookies with the same secret and honours the same logouts: the HMAC secret (generated on first use,
 * 32 random bytes) and the ids of sessions ended by logout, each kept until its own expiry.
 */
export interface SessionStore {
  secret(): Promise<string>;
  revoke(sid: string, expiresAt: number): Promise<void>;
  isRevoked(sid: string): Promise<boolean>;
}

export function registrySessionStore(reg: StoreRegistry, now: () => number = Date.now): SessionStore {
  const { meta } = reg.t;
  let cached: string | undefined;
  return {
    async secret() {
      if (cached) return cached;
      const fresh = randomBytes(32).toString('base64url');
      // Insert-if-absent then read: two replicas starting together agree on whichever row won.
      await reg.q.insert(meta).values({ key: SECRET_KEY, value: fresh }).onConflictDoNothing();
      const [row] = await reg.q.select().from(meta).where(eq(meta.key, SECRET_KEY)).limit(1);
      cached = row!.value;
      return cached;
    },
    async revoke(sid, expiresAt) {
      await reg.tx(function* (tx, t) {
        // Prune ended sessions whose cookies have expired anyway: the list stays as small as the live logouts.
        for (const r of yield* q(tx.select().from(t.meta).where(like(t.meta.key, `${REVOKED_PREFIX}%`)))) {
          if (Number(r.value) < now()) yield* q(tx.delete(t.meta).where(eq(t.meta.key, r.key)));
        }
        yield* q(tx.insert(t.meta).values({ key: REVOKED_PREFIX + sid, value: String(expiresAt) }).onConflictDoNothing());
      });
    },
    async isRevoked(sid) {
      const rows = await reg.q.select({ k: meta.key }).from(meta).where(eq(meta.key, REVOKED_PREFIX + sid)).limit(1);
      return rows.length > 0;
    },
  };
}
