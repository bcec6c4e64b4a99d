import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';

/**
 * Ed25519 keys for release signing, from `node:crypto` only (DESIGN.md "Fixed choices": no
 * home-made crypto). A key is named by its key id: the first 16 hex digits of sha256 over the raw
 * 32-byte public key, so the id does not depend on how the key happens to be encoded.
 */

/** What the cloud keeps to sign releases. */
export interface SigningKey {
  keyId: string;
  privateKeyPem: string;
  publicKeyPem: string;
}

/** What a device is provisioned with: the public half only. Several entries allow key rotation. */
export interface TrustedKey {
  keyId: string;
  publicKeyPem: string;
}

export class KeyError extends Error {
  override readonly name = 'KeyError';
}

/** DER SubjectPublicKeyInfo of an Ed25519 key: a fixed 12-byte header, then the raw 32-byte key (RFC 8410 §4). */
const ED25519_SPKI_LENGTH = 44;
const ED25519_RAW_LENGTH = 32;

function assertEd25519(key: KeyObject, what: string): KeyObject {
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new KeyError(`${what}: expected an ed25519 key, got ${key.asymmetricKeyType ?? key.type}`);
  }
  return key;
}

/** Loads an Ed25519 public key from PEM (SPKI); also accepts a private key PEM and derives the public half. */
export function loadPublicKey(pem: string | KeyObject): KeyObject {
  if (typeof pem !== 'string') return assertEd25519(pem.type === 'private' ? createPublicKey(pem) : pem, 'public key');
  try {
    return assertEd25519(createPublicKey(pem), 'public key');
  } catch (err) {
    if (err instanceof KeyError) throw err;
    throw new KeyError(`public key: cannot parse PEM: ${(err as Error).message}`);
  }
}

/** Loads an Ed25519 private key from PEM (PKCS#8). */
export function loadPrivateKey(pem: string | KeyObject): KeyObject {
  if (typeof pem !== 'string') {
    if (pem.type !== 'private') throw new KeyError('private key: got a public key');
    return assertEd25519(pem, 'private key');
  }
  try {
    return assertEd25519(createPrivateKey(pem), 'private key');
  } catch (err) {
    if (err instanceof KeyError) throw err;
    throw new KeyError(`private key: cannot parse PEM: ${(err as Error).message}`);
  }
}

/** The raw 32-byte Ed25519 public key (the tail of its SPKI DER encoding). */
export function rawPublicKey(publicKey: string | KeyObject): Buffer {
  const der = loadPublicKey(publicKey).export({ format: 'der', type: 'spki' });
  if (der.length !== ED25519_SPKI_LENGTH) throw new KeyError(`unexpected SPKI length ${der.length} for an ed25519 key`);
  return der.subarray(der.length - ED25519_RAW_LENGTH);
}

/** First 16 hex characters of sha256(raw public key). Accepts a public or private key (PEM or KeyObject). */
export function keyIdOf(publicKey: string | KeyObject): string {
  return createHash('sha256').update(rawPublicKey(publicKey)).digest('hex').slice(0, 16);
}

/**
 * Creates a fresh Ed25519 signing key.
 *
 * @example
 * const key = generateSigningKey();
 * const trusted: TrustedKey[] = [{ keyId: key.keyId, publicKeyPem: key.publicKeyPem }];
 */
export function generateSigningKey(): SigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    keyId: keyIdOf(publicKey),
    privateKeyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    publicKeyPem: publicKey.export({ format: 'pem', type: 'spki' }).toString(),
  };
}

/** Builds a trusted-key entry from a public key PEM, computing its key id. */
export function trustedKeyFromPem(publicKeyPem: string): TrustedKey {
  const key = loadPublicKey(publicKeyPem);
  return { keyId: keyIdOf(key), publicKeyPem: key.export({ format: 'pem', type: 'spki' }).toString() };
}

/** The public half of a signing key, as a device would be provisioned with it. */
export function toTrustedKey(key: Pick<SigningKey, 'publicKeyPem'>): TrustedKey {
  return trustedKeyFromPem(key.publicKeyPem);
}
