import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { verifyKeySet, type KeySetVerdict, type SigningKey, type TrustedKey } from '../../shared/manifest/index.js';
import { sign as edSign } from 'node:crypto';
import { canonicalBytes } from '../../shared/manifest/canonical.js';
import { loadPrivateKey } from '../../shared/manifest/keys.js';
import { keySetSchema, signedKeySetSchema, type KeySet, type SignedKeySet } from '../../shared/protocol/index.js';
import { UsageError } from '../../shared/cli/errors.js';
import { writeFileAtomicSync } from './atomic.js';
import type { KeyInfo } from './store.js';

/** The published, root-signed key set in the cloud's data dir (public; the cloud retains it on trust/keyset). */
export const KEYSET_FILE = 'keyset.json';
const TEN_YEARS_MS = 3650 * 86_400_000;

export function keySetPath(dataDir: string): string {
  return join(dataDir, KEYSET_FILE);
}

/** The published key set, or undefined. Throws UsageError on a corrupt file. */
export function readPublishedKeySet(dataDir: string): SignedKeySet | undefined {
  const path = keySetPath(dataDir);
  if (!existsSync(path)) return undefined;
  const env = signedKeySetSchema.safeParse(JSON.parse(readFileSync(path, 'utf8')));
  const ks = env.success ? keySetSchema.safeParse(env.data.keyset) : undefined;
  if (!env.success || !ks?.success) throw new UsageError(`${path}: not a signed key set`);
  return { keyset: ks.data, signatures: env.data.signatures };
}

/**
 * The next unsigned key set, from the key store's state (`keys rotate|activate|retire`): every key not
 * retired may sign releases; `revoke` adds revocations (kept from the previous version too). The
 * version is the published one + 1. The admin signs it offline with `keys sign-keyset`.
 */
export function draftKeySet({ keys, root, previous, expiresDays, revoke = [], now = new Date() }: { keys: KeyInfo[]; root: TrustedKey; previous?: KeySet; expiresDays: number; revoke?: string[]; now?: Date }): KeySet {
  const revokedAt = now.toISOString();
  const revoked = [...(previous?.revoked ?? [])];
  for (const id of revoke) {
    if (!/^[0-9a-f]{16}$/.test(id)) throw new UsageError(`--revoke ${id}: expected a 16-hex-digit key id`);
    if (!revoked.some((r) => r.keyId === id)) revoked.push({ keyId: id, revokedAt, reason: 'revoked by the operator' });
  }
  const live = keys.filter((k) => k.status !== 'retired' && !revoked.some((r) => r.keyId === k.keyId));
  return {
    v: 1,
    type: 'apprentice-keyset',
    version: (previous?.version ?? 0) + 1,
    createdAt: now.toISOString(),
    expiresAt: new Date(now.getTime() + expiresDays * 86_400_000).toISOString(),
    root,
    keys: live.map((k) => ({ keyId: k.keyId, publicKeyPem: k.publicKeyPem, notBefore: new Date(Math.min(Date.parse(k.createdAt), now.getTime())).toISOString(), notAfter: new Date(now.getTime() + TEN_YEARS_MS).toISOString() })),
    revoked,
  };
}

/**
 * Checks a signed key set against the published one (the same rules as a device) and stores it.
 * The first key set is also co-signed with the cloud's active release key, so devices in the field
 * that hold only `trustedKeys` can bootstrap from it (README "Root of trust").
 */
export function publishKeySet(dataDir: string, signed: unknown, activeKey: SigningKey): { verdict: Extract<KeySetVerdict, { ok: true }>; path: string } {
  const previous = readPublishedKeySet(dataDir);
  const env = signedKeySetSchema.safeParse(signed);
  const draft = env.success ? keySetSchema.safeParse(env.data.keyset) : undefined;
  if (!env.success || !draft?.success) throw new UsageError('not a signed key set (run keys sign-keyset first)');
  const verdict = verifyKeySet(signed, previous ? { current: previous.keyset, bootstrapKeys: [] } : { root: draft.data.root, bootstrapKeys: [] });
  if (!verdict.ok) throw new UsageError(`key set refused: ${verdict.reason}: ${verdict.detail}`);
  let out = verdict.signed;
  if (!previous && !out.signatures.some((s) => s.keyId === activeKey.keyId)) {
    const sig = edSign(null, canonicalBytes(out.keyset), loadPrivateKey(activeKey.privateKeyPem)).toString('base64');
    out = { ...out, signatures: [...out.signatures, { alg: 'ed25519', keyId: activeKey.keyId, sig }] };
  }
  const path = keySetPath(dataDir);
  writeFileAtomicSync(path, JSON.stringify(out), 0o644);
  return { verdict, path };
}
