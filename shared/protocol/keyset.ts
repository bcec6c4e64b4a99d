import { z } from 'zod';
import { isoTime, signatureSchema } from './schemas.js';

/**
 * Payload of `trust/keyset` (cloud → every device, retained; DESIGN.md "Trust"), after TUF's root
 * role (theupdateframework.io specification, "root.json"): an offline root signs a versioned list of
 * the keys that may sign releases, their validity windows and the revoked keys, with an expiry.
 *
 * - Version N+1 is accepted only when signed by the root the device trusts now (the `root` of the
 *   key set it holds, or its provisioned root). Older or equal versions are refused (rollback attack).
 * - Root rotation: a key set whose `root` differs from the trusted one must carry signatures by both
 *   the old root (which vouches for the change) and the new one (which proves possession), as TUF does.
 * - A device with no root yet (bootstrap from edge.json `trustedKeys`) also accepts a key set signed
 *   by one of those keys, once: trust on first use (README, "Root of trust").
 * - Signatures cover the RFC 8785 canonical JSON of `keyset` as received (shared/manifest/canonical.ts).
 */

const keyId = z.string().regex(/^[0-9a-f]{16}$/, 'expected a 16-hex-digit key id');
/** An Ed25519 SPKI PEM is 113 characters; the bound keeps hostile payloads small. Parsed at verify time. */
const publicKeyPem = z
  .string()
  .max(1024)
  .regex(/^-----BEGIN PUBLIC KEY-----\r?\n[A-Za-z0-9+/=\r\n]+-----END PUBLIC KEY-----\r?\n?$/, 'expected a PEM public key');

export const MAX_KEYSET_KEYS = 32;
export const MAX_KEYSET_REVOCATIONS = 256;

export const keysetKeySchema = z
  .strictObject({
    keyId,
    publicKeyPem,
    /** The key may sign releases created within [notBefore, notAfter]. */
    notBefore: isoTime,
    notAfter: isoTime,
  })
  .refine((k) => Date.parse(k.notBefore) < Date.parse(k.notAfter), { message: 'notBefore must be before notAfter', path: ['notAfter'] });

export const revocationSchema = z.strictObject({
  keyId,
  revokedAt: isoTime,
  reason: z.string().max(256).optional(),
});

export const keySetSchema = z
  .strictObject({
    v: z.literal(1),
    type: z.literal('apprentice-keyset'),
    /** Monotonic; devices refuse anything at or below the version they hold. */
    version: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
    createdAt: isoTime,
    /** After this the device keeps the key set but reports `trust_stale`. */
    expiresAt: isoTime,
    /** The root key that signs the next version (a change of root is a root rotation). */
    root: z.strictObject({ keyId, publicKeyPem }),
    /** Release-signing keys. */
    keys: z.array(keysetKeySchema).max(MAX_KEYSET_KEYS),
    /** Revoked release keys: their releases are refused even when already installed. */
    revoked: z.array(revocationSchema).max(MAX_KEYSET_REVOCATIONS),
  })
  .refine((k) => Date.parse(k.createdAt) < Date.parse(k.expiresAt), { message: 'createdAt must be before expiresAt', path: ['expiresAt'] })
  .refine((k) => new Set(k.keys.map((x) => x.keyId)).size === k.keys.length, { message: 'duplicate key id', path: ['keys'] })
  .refine((k) => new Set(k.revoked.map((x) => x.keyId)).size === k.revoked.length, { message: 'duplicate revocation', path: ['revoked'] })
  .refine((k) => !k.keys.some((x) => k.revoked.some((r) => r.keyId === x.keyId)), { message: 'a revoked key cannot be listed as a signing key', path: ['keys'] })
  .refine((k) => !k.keys.some((x) => x.keyId === k.root.keyId), { message: 'the root key must not also sign releases', path: ['keys'] });
export type KeySet = z.infer<typeof keySetSchema>;

/** The retained payload: the key set as signed, and one or more detached signatures over it. */
export const signedKeySetSchema = z.strictObject({
  keyset: z.unknown(),
  signatures: z
    .array(signatureSchema)
    .min(1)
    .max(4)
    .refine((s) => new Set(s.map((x) => x.keyId)).size === s.length, 'one signature per key'),
});
export type SignedKeySet = { keyset: KeySet; signatures: z.infer<typeof signatureSchema>[] };
