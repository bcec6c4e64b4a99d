import { createHash, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Device MQTT credentials in Mosquitto's own password-file hash format, so the one hash stored in the
 * registry (`devices.credential_hash`) serves both the cloud's verification and `apprentice broker-auth`.
 *
 *   $7$<iterations>$<salt, base64>$<hash, base64>
 *
 * `$7$` is PBKDF2-HMAC-SHA512 with a 12-byte salt and a 64-byte derived key; the salt is used as its
 * decoded bytes (mosquitto 2.0 `src/password_mosq.c`, `pw__hash` with `hashtype = pw_sha512_pbkdf2`).
 * 101 iterations is `mosquitto_passwd`'s default: every CONNECT pays it. The passwords are 192-bit random
 * strings, so the iteration count is not what protects them from guessing.
 * The older `$6$` form (one salted SHA-512, mosquitto 1.x) is verified too, never written.
 */
export const MOSQUITTO_PBKDF2_ITERATIONS = 101;
const SALT_BYTES = 12;
const HASH_BYTES = 64;
const HASH_RE = /^\$(6|7)\$(?:(\d{1,7})\$)?([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})$/;

/** Passwords of the provisioned devices: 24 random bytes, base64url (32 characters, no `:` or newline). */
export function generatePassword(): string {
  return randomBytes(24).toString('base64url');
}

/**
 * `$7$` hash of `password`, byte-compatible with `mosquitto_passwd`.
 *
 * @example
 * const line = `${deviceId}:${hashPassword(password)}`; // a Mosquitto password file line
 */
export function hashPassword(password: string, { iterations = MOSQUITTO_PBKDF2_ITERATIONS, salt = randomBytes(SALT_BYTES) }: { iterations?: number; salt?: Buffer } = {}): string {
  if (!Number.isSafeInteger(iterations) || iterations < 1) throw new RangeError(`invalid iteration count ${iterations}`);
  const hash = pbkdf2Sync(password, salt, iterations, HASH_BYTES, 'sha512');
  return `$7$${iterations}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

/** True when `hash` has a form `verifyPassword` understands. */
export function isPasswordHash(hash: string): boolean {
  const m = HASH_RE.exec(hash);
  return m !== null && (m[1] === '7') === (m[2] !== undefined);
}

/** Checks `password` against a `$7$` (or legacy `$6$`) hash in constant time. False for malformed hashes. */
export function verifyPassword(password: string, hash: string): boolean {
  const m = HASH_RE.exec(hash);
  if (!m) return false;
  const [, type, iter, saltB64, hashB64] = m;
  const salt = Buffer.from(saltB64!, 'base64');
  const expected = Buffer.from(hashB64!, 'base64');
  let actual: Buffer;
  if (type === '7') {
    if (iter === undefined || Number(iter) < 1) return false;
    actual = pbkdf2Sync(password, salt, Number(iter), expected.length || HASH_BYTES, 'sha512');
  } else {
    if (iter !== undefined) return false;
    actual = createHash('sha512').update(password).update(salt).digest();
  }
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}

/** `username:hash` lines, sorted by username, newline-terminated (the Mosquitto `password_file` format). */
export function formatPasswordFile(entries: readonly { username: string; hash: string }[]): string {
  const seen = new Set<string>();
  const lines = [...entries]
    .sort((a, b) => (a.username < b.username ? -1 : a.username > b.username ? 1 : 0))
    .map(({ username, hash }) => {
      if (!username || /[:\n\r]/.test(username)) throw new Error(`invalid Mosquitto username "${username}"`);
      if (seen.has(username)) throw new Error(`duplicate Mosquitto username "${username}"`);
      if (!isPasswordHash(hash)) throw new Error(`user "${username}": not a Mosquitto password hash`);
      seen.add(username);
      return `${username}:${hash}`;
    });
  return lines.length ? lines.join('\n') + '\n' : '';
}

/** Parses a Mosquitto password file into username → hash (blank lines and `#` comments skipped). */
export function parsePasswordFile(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (line.trim() === '' || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    out.set(line.slice(0, colon), line.slice(colon + 1));
  }
  return out;
}
