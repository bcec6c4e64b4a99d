import { eq } from 'drizzle-orm';
import { devices, meta } from '../registry/schema.js';
import type { Db } from './store.js';

/**
 * Key-set versions for the `unknown_key` rule (issue 8): a device whose trusted key set (status
 * `trust.keysetVersion`) is older than the cloud's current one is catching up after a rotation and
 * retries; an up-to-date device that does not know the signing key is a security pause.
 */

/** meta key holding the version of the root-signed key set the cloud last retained on trust/keyset. */
export const KEYSET_VERSION_KEY = 'keyset_version';

/** Records the current key-set version (the cloud calls it whenever it retains the published key set). */
export async function setCurrentKeySetVersion(db: Db, version: number): Promise<void> {
  if (!Number.isSafeInteger(version) || version < 0) throw new RangeError(`key-set version must be a non-negative integer, got ${version}`);
  db.insert(meta)
    .values({ key: KEYSET_VERSION_KEY, value: String(version) })
    .onConflictDoUpdate({ target: meta.key, set: { value: String(version) } })
    .run();
}

/** The current key-set version, or null when none was published (or the stored value is not a version). */
export function currentKeySetVersionSync(db: Db): number | null {
  const row = db.select({ value: meta.value }).from(meta).where(eq(meta.key, KEYSET_VERSION_KEY)).get();
  if (!row) return null;
  const v = Number(row.value);
  return Number.isSafeInteger(v) && v >= 0 ? v : null;
}

export async function currentKeySetVersion(db: Db): Promise<number | null> {
  return currentKeySetVersionSync(db);
}

/**
 * The device's reported key-set version against the current one, read in the caller's transaction;
 * undefined when the cloud has no current version (then `unknown_key` is taken as catching up).
 */
export function registryKeySet(db: Db, deviceId: string): { device: number | null; current: number } | undefined {
  const current = currentKeySetVersionSync(db);
  if (current === null) return undefined;
  const row = db.select({ trust: devices.trust }).from(devices).where(eq(devices.id, deviceId)).get();
  const v = row?.trust?.keysetVersion;
  return { device: typeof v === 'number' && Number.isSafeInteger(v) ? v : null, current };
}
