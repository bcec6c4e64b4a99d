import { randomBytes } from 'node:crypto';
import { eq, like } from 'drizzle-orm';
import type { RegistryDb } from '../registry/db.js';
import { meta } from '../registry/schema.js';

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

export function registrySessionStore(db: RegistryDb, now: () => number = Date.now): SessionStore {
  let cached: string | undefined;
  return {
    async secret() {
      if (cached) return cached;
      const fresh = randomBytes(32).toString('base64url');
      // Insert-if-absent then read: two replicas starting together agree on whichever row won.
      db.insert(meta).values({ key: SECRET_KEY, value: fresh }).onConflictDoNothing().run();
      cached = db.select().from(meta).where(eq(meta.key, SECRET_KEY)).get()!.value;
      return cached;
    },
    async revoke(sid, expiresAt) {
      db.transaction((tx) => {
        // Prune ended sessions whose cookies have expired anyway: the list stays as small as the live logouts.
        for (const r of tx.select().from(meta).where(like(meta.key, `${REVOKED_PREFIX}%`)).all()) if (Number(r.value) < now()) tx.delete(meta).where(eq(meta.key, r.key)).run();
        tx.insert(meta).values({ key: REVOKED_PREFIX + sid, value: String(expiresAt) }).onConflictDoNothing().run();
      });
    },
    async isRevoked(sid) {
      return db.select({ k: meta.key }).from(meta).where(eq(meta.key, REVOKED_PREFIX + sid)).get() !== undefined;
    },
  };
}
