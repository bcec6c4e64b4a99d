import { eq } from 'drizzle-orm';
import type { StoreRegistry } from '../registry/open.js';
import { q, type Tables, type TxDb } from '../registry/tx.js';
import { run, type KeySet } from './store.js';

/**
 * Key-set versions for the `unknown_key` rule (issue 8): a device whose trusted key set (status
 * `trust.keysetVersion`) is older than the cloud's current one is catching up after a rotation and
 * retries; an up-to-date device that does not know the signing key is a security pause.
 */

/** meta key holding the version of the root-signed key set the cloud last retained on trust/keyset. */
export const KEYSET_VERSION_KEY = 'keyset_version';

/** Records the current key-set version (the cloud calls it whenever it retains the published key set). */
export async function setCurrentKeySetVersion(reg: StoreRegistry, version: number): Promise<void> {
  if (!Number.isSafeInteger(version) || version < 0) throw new RangeError(`key-set version must be a non-negative integer, got ${version}`);
  await reg.q
    .insert(reg.t.meta)
    .values({ key: KEYSET_VERSION_KEY, value: String(version) })
    .onConflictDoUpdate({ target: reg.t.meta.key, set: { value: String(version) } });
}

/** The current key-set version, or null when none was published (or the stored value is not a version). */
export function* currentKeySetVersionSteps(tx: TxDb, t: Tables) {
  const [row] = yield* q(tx.select({ value: t.meta.value }).from(t.meta).where(eq(t.meta.key, KEYSET_VERSION_KEY)).limit(1));
  if (!row) return null;
  const v = Number(row.value);
  return Number.isSafeInteger(v) && v >= 0 ? v : null;
}

export function currentKeySetVersion(reg: StoreRegistry): Promise<number | null> {
  return run(reg, currentKeySetVersionSteps);
}

/**
 * The device's reported key-set version against the current one, read in the caller's transaction;
 * undefined when the cloud has no current version (then `unknown_key` is taken as catching up).
 */
export function* registryKeySetSteps(tx: TxDb, t: Tables, deviceId: string) {
  const current = yield* currentKeySetVersionSteps(tx, t);
  if (current === null) return undefined;
  const [row] = yield* q(tx.select({ trust: t.devices.trust }).from(t.devices).where(eq(t.devices.id, deviceId)).limit(1));
  const v = row?.trust?.keysetVersion;
  const ks: KeySet = { device: typeof v === 'number' && Number.isSafeInteger(v) ? v : null, current };
  return ks;
}
