import { sign as edSign, verify as edVerify, type KeyObject } from 'node:crypto';
import { decodePayload, formatIssues, PayloadError } from '../protocol/codec.js';
import { keySetSchema, signedKeySetSchema, type KeySet, type SignedKeySet } from '../protocol/keyset.js';
import { canonicalBytes, CanonicalJsonError } from './canonical.js';
import { keyIdOf, loadPrivateKey, loadPublicKey, type TrustedKey } from './keys.js';

/**
 * Signing and checking the root-signed key set (shared/protocol/keyset.ts), after TUF's root role
 * (theupdateframework.io specification §5.3, "Update the root role"). Ed25519 over RFC 8785
 * canonical JSON, from node:crypto only.
 */

export class KeySetError extends Error {
  override readonly name = 'KeySetError';
}

/** Signs the canonical JSON of a validated key set with each key (the root; on rotation, old and new root). */
export function signKeySet(keyset: KeySet, signers: ReadonlyArray<string | KeyObject>): SignedKeySet {
  const parsed = keySetSchema.safeParse(keyset);
  if (!parsed.success) throw new KeySetError(`refusing to sign an invalid key set: ${formatIssues(parsed.error)}`);
  if (signers.length === 0) throw new KeySetError('no signing key');
  const bytes = canonicalBytes(parsed.data);
  const signatures = signers.map((s) => {
    const key = loadPrivateKey(s);
    return { alg: 'ed25519' as const, keyId: keyIdOf(key), sig: edSign(null, bytes, key).toString('base64') };
  });
  return { keyset: parsed.data, signatures };
}

/** What a device trusts when a key set arrives. */
export interface KeySetAnchor {
  /** The key set it holds (its `root` signs the next version), if any. */
  current?: KeySet;
  /** A root provisioned in its bundle (used while it holds no key set). */
  root?: TrustedKey;
  /** edge.json `trustedKeys`: a first key set signed by one of them is accepted once (trust on first use). */
  bootstrapKeys: readonly TrustedKey[];
  /** edge.json `rootKeyId`: the only root a bootstrap may install. */
  rootKeyId?: string;
}

export const KEYSET_FAILURES = ['malformed_keyset', 'stale_keyset', 'untrusted_keyset', 'bad_signature', 'root_pin_mismatch'] as const;
export type KeySetFailure = (typeof KEYSET_FAILURES)[number];

export type KeySetVerdict =
  | { ok: true; keyset: KeySet; signed: SignedKeySet; how: 'root' | 'root_rotation' | 'bootstrap' }
  | { ok: false; reason: KeySetFailure; detail: string };

const ED25519_SIGNATURE_BYTES = 64;

function publicKeyMatching(entry: TrustedKey): KeyObject | undefined {
  try {
    const key = loadPublicKey(entry.publicKeyPem);
    return keyIdOf(key) === entry.keyId ? key : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Checks a `trust/keyset` payload against what the device trusts. Order, as for manifests: envelope →
 * canonical bytes → signatures → schema, then the version rule. A key set is accepted when:
 * - its version is above the one held (an older or equal one is a rollback: `stale_keyset`);
 * - it is signed by the trusted root (the held key set's `root`, else the provisioned root), and,
 *   when it names a different root (rotation), by that new root too;
 * - with no root at all, by one of `bootstrapKeys` (and its root equals `rootKeyId` when pinned).
 * An expired key set is *accepted* when newer (the caller reports `trust_stale`): refusing it would
 * leave the device on an even older one.
 */
export function verifyKeySet(payload: unknown, anchor: KeySetAnchor): KeySetVerdict {
  let envelope: { keyset?: unknown; signatures: { keyId: string; sig: string }[] };
  try {
    envelope = typeof payload === 'string' || payload instanceof Uint8Array ? decodePayload(signedKeySetSchema, payload) : signedKeySetSchema.parse(payload);
  } catch (err) {
    return { ok: false, reason: 'malformed_keyset', detail: err instanceof PayloadError ? err.message : String((err as Error).message) };
  }
  let bytes: Buffer;
  try {
    bytes = canonicalBytes(envelope.keyset);
  } catch (err) {
    if (err instanceof CanonicalJsonError) return { ok: false, reason: 'malformed_keyset', detail: err.message };
    throw err;
  }
  const parsed = keySetSchema.safeParse(envelope.keyset);
  if (!parsed.success) return { ok: false, reason: 'malformed_keyset', detail: formatIssues(parsed.error) };
  const next = parsed.data;

  const signedBy = (entry: TrustedKey | undefined): boolean => {
    if (!entry) return false;
    const s = envelope.signatures.find((x) => x.keyId === entry.keyId);
    const key = publicKeyMatching(entry);
    if (!s || !key) return false;
    const sig = Buffer.from(s.sig, 'base64');
    return sig.length === ED25519_SIGNATURE_BYTES && edVerify(null, bytes, key, sig);
  };

  // The new root must be what it claims to be (its id is the hash of its key).
  if (!publicKeyMatching(next.root)) return { ok: false, reason: 'malformed_keyset', detail: `root ${next.root.keyId}: key id does not match the key` };
  for (const k of next.keys) {
    if (!publicKeyMatching(k)) return { ok: false, reason: 'malformed_keyset', detail: `key ${k.keyId}: key id does not match the key` };
  }

  if (anchor.current && next.version <= anchor.current.version) {
    return { ok: false, reason: 'stale_keyset', detail: `version ${next.version} is not above the held ${anchor.current.version}` };
  }
  const root = anchor.current?.root ?? anchor.root;
  if (root) {
    if (!signedBy(root)) return { ok: false, reason: envelope.signatures.some((s) => s.keyId === root.keyId) ? 'bad_signature' : 'untrusted_keyset', detail: `not signed by the trusted root ${root.keyId}` };
    if (next.root.keyId === root.keyId) return { ok: true, keyset: next, signed: { keyset: next, signatures: envelope.signatures as SignedKeySet['signatures'] }, how: 'root' };
    if (!signedBy(next.root)) return { ok: false, reason: 'bad_signature', detail: `root rotation to ${next.root.keyId} is not signed by the new root` };
    return { ok: true, keyset: next, signed: { keyset: next, signatures: envelope.signatures as SignedKeySet['signatures'] }, how: 'root_rotation' };
  }
  // Bootstrap (trust on first use): the device has only its release keys.
  if (anchor.rootKeyId !== undefined && next.root.keyId !== anchor.rootKeyId) {
    return { ok: false, reason: 'root_pin_mismatch', detail: `root ${next.root.keyId} is not the pinned ${anchor.rootKeyId}` };
  }
  const by = anchor.bootstrapKeys.find((k) => signedBy(k));
  if (!by) return { ok: false, reason: 'untrusted_keyset', detail: 'a first key set must be signed by one of trustedKeys (or the provisioned root)' };
  // The root must also sign: a leaked release key alone cannot invent a root it does not hold.
  if (!signedBy(next.root)) return { ok: false, reason: 'bad_signature', detail: `not signed by its own root ${next.root.keyId}` };
  return { ok: true, keyset: next, signed: { keyset: next, signatures: envelope.signatures as SignedKeySet['signatures'] }, how: 'bootstrap' };
}

/** The release keys of a key set that may sign a manifest created at `createdAt` (not revoked, within their window). */
export function releaseKeysOf(keyset: KeySet, createdAt?: string): TrustedKey[] {
  const t = createdAt === undefined ? undefined : Date.parse(createdAt);
  return keyset.keys
    .filter((k) => !keyset.revoked.some((r) => r.keyId === k.keyId))
    .filter((k) => t === undefined || (Date.parse(k.notBefore) <= t && t <= Date.parse(k.notAfter)))
    .map((k) => ({ keyId: k.keyId, publicKeyPem: k.publicKeyPem }));
}

/** Whether `keyId` is revoked by `keyset`. */
export function isRevoked(keyset: KeySet | undefined, keyId: string): boolean {
  return keyset?.revoked.some((r) => r.keyId === keyId) ?? false;
}

/** Whether a key set is past its expiry, judged at `now` (the caller passes max(clock, time floor)). */
export function keySetExpired(keyset: KeySet, now: Date): boolean {
  return Date.parse(keyset.expiresAt) <= now.getTime();
}
