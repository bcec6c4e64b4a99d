import { generateKeyPairSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { keyIdOf, loadPrivateKey, trustedKeyFromPem, type TrustedKey } from '../../shared/manifest/index.js';
import { UsageError } from '../../shared/cli/errors.js';
import { assertPrivateMode } from './store.js';

/**
 * The offline root key (issue 10, DESIGN.md "Trust"). Only the admin commands `keys init-root` and
 * `keys sign-keyset` use this module, on an admin machine: the cloud server never reads a root key
 * (test/unit/trust/root-offline.test.ts walks cloud/server.ts's imports to prove this module is not
 * among them).
 */

/** Creates a root key at `file` (mode 0600, never overwriting) and its public half at `file.pub`. */
export function initRoot(file: string): TrustedKey {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  try {
    // `wx`: an existing root must never be replaced by accident; devices trust it until rotated.
    writeFileSync(file, privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new UsageError(`${file} exists: refusing to overwrite a root key`);
    throw err;
  }
  const pub = publicKey.export({ format: 'pem', type: 'spki' }).toString();
  writeFileSync(`${file}.pub`, pub, { mode: 0o644 });
  return { keyId: keyIdOf(publicKey), publicKeyPem: pub };
}

/** Reads a root private key (PEM, mode 0600). */
export function readRootKey(file: string): { privateKeyPem: string; trusted: TrustedKey } {
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`--root ${file}: ${(err as Error).message}`);
  }
  assertPrivateMode(file);
  try {
    return { privateKeyPem: pem, trusted: trustedKeyFromPem(loadPrivateKey(pem).export({ format: 'pem', type: 'pkcs8' }).toString()) };
  } catch (err) {
    throw new UsageError(`--root ${file}: not an Ed25519 private key: ${(err as Error).message}`);
  }
}
