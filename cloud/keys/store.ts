import { createPublicKey } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { UsageError } from '../../shared/cli/errors.js';
import { generateSigningKey, keyIdOf, loadPrivateKey, type SigningKey, type TrustedKey } from '../../shared/manifest/keys.js';
import { formatIssues } from '../../shared/protocol/codec.js';
import { writeFileAtomicSync } from './atomic.js';

/**
 * The cloud's release-signing keys, in `DATA/keys/`:
 *
 *   index.json          which keys exist, which one signs (`active`), which are retired (JSON, written atomically)
 *   <keyId>.key.pem     PKCS#8 private key of each generated key, mode 0600 (checked on every load)
 *
 * Rotation: several keys are trusted at once. `rotate()` adds a key (and by default makes it the one that
 * signs); the older ones stay in `trusted()` — what device config bundles carry — until `retire(keyId)`.
 * Devices only trust the keys they were provisioned with, so a key should be staged
 * (`rotate({ activate: false })`) and reach the fleet's configs before `activate()` makes it sign.
 *
 * An external key (`keyFile`, or `keyPem` from `APPRENTICE_SIGNING_KEY`) is never copied into the
 * directory: it is the active key while it is given, and its public half is recorded in the index so it
 * stays trusted after the operator moves on to another one.
 *
 * Shared (`readOnly`, README "Running several replicas"): the directory is one every replica mounts
 * (`keys.sharedDir`, e.g. a secret). The cloud then never writes it: no key is generated, an external key
 * must already be listed in its index, and rotate/activate/retire are refused here; the operator runs them
 * with `apprentice keys ... --keys-dir DIR` on an admin host and restarts (or lets reload) the replicas.
 */
export const SIGNING_KEY_ENV = 'APPRENTICE_SIGNING_KEY';
export const KEYS_DIR = 'keys';
export const KEY_INDEX_FILE = 'index.json';
const INDEX_VERSION = 1;

/** A key store problem the operator must fix (corrupt file, loose mode, unknown key id). CLI exit code 2. */
export class KeyStoreError extends UsageError {
  override readonly name = 'KeyStoreError';
}

export type KeySource = 'generated' | 'file' | 'env';

const keyIdSchema = z.string().regex(/^[0-9a-f]{16}$/, 'expected a 16-hex-digit key id');
const keyEntrySchema = z.strictObject({
  keyId: keyIdSchema,
  publicKeyPem: z.string().min(1),
  createdAt: z.iso.datetime(),
  source: z.enum(['generated', 'file', 'env']),
});
const indexSchema = z.strictObject({
  version: z.literal(INDEX_VERSION),
  active: keyIdSchema,
  keys: z.array(keyEntrySchema).min(1),
  retired: z.array(keyEntrySchema.extend({ retiredAt: z.iso.datetime() })),
});
type KeyIndex = z.infer<typeof indexSchema>;

export interface KeyInfo {
  keyId: string;
  status: 'active' | 'trusted' | 'retired';
  source: KeySource;
  createdAt: string;
  retiredAt?: string;
  publicKeyPem: string;
}

export interface KeyStoreOptions {
  /** The keys directory, normally `DATA/keys` (see `keysDirIn`). Created with mode 0700. */
  dir: string;
  /** Sign with the Ed25519 PKCS#8 PEM in this file (mode 0600 required). */
  keyFile?: string;
  /** Sign with this PEM, normally `process.env.APPRENTICE_SIGNING_KEY`. Exclusive with `keyFile`. */
  keyPem?: string;
  /** Initialise an empty directory with a new key (default). false: a missing store is an error (CLI). */
  create?: boolean;
  /**
   * A store shared by several replicas (implies `create: false`): never written by this process. A missing
   * store is refused (never generated), an external key must already be in the index.
   */
  readOnly?: boolean;
  clock?: () => Date;
}

/** `DATA/keys`. */
export function keysDirIn(dataDir: string): string {
  return join(dataDir, KEYS_DIR);
}

function keyFileName(keyId: string): string {
  return `${keyId}.key.pem`;
}

/** Refuses a private key readable or writable by group or others (POSIX only). */
export function assertPrivateMode(file: string): void {
  if (process.platform === 'win32') return;
  const mode = statSync(file).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new KeyStoreError(`${file}: private key has mode 0${mode.toString(8)}, expected 0600 (run: chmod 600 ${file})`);
  }
}

function parsePrivatePem(pem: string, where: string): SigningKey {
  let key;
  try {
    key = loadPrivateKey(pem);
  } catch (err) {
    throw new KeyStoreError(`${where}: not a valid Ed25519 private key in PEM (PKCS#8): ${(err as Error).message}`);
  }
  return {
    keyId: keyIdOf(key),
    privateKeyPem: key.export({ format: 'pem', type: 'pkcs8' }).toString(),
    publicKeyPem: createPublicKey(key).export({ format: 'pem', type: 'spki' }).toString(),
  };
}

/**
 * Release-signing keys over a directory. Synchronous: it runs at start-up and in one-shot CLI commands.
 * A long-running process sees `apprentice keys rotate|activate|retire` done by another process: every
 * accessor re-reads the index when its file changed.
 *
 * @example
 * const keys = KeyStore.open({ dir: keysDirIn(dataDir), keyPem: process.env[SIGNING_KEY_ENV] });
 * const signed = signManifest(manifest, keys.active());
 * const bundleKeys = keys.trusted();
 */
export class KeyStore {
  private index!: KeyIndex;
  private stamp = '';
  private readonly privateKeys = new Map<string, SigningKey>();
  private external: { key: SigningKey; source: 'file' | 'env' } | undefined;
  private readonly indexPath: string;
  private readonly clock: () => Date;

  private constructor(readonly dir: string, clock: () => Date, readonly readOnly: boolean) {
    this.indexPath = join(dir, KEY_INDEX_FILE);
    this.clock = clock;
  }

  /**
   * Opens (or initialises) the store: loads and checks the index and every private key file; on first
   * start without an external key, generates one. Throws KeyStoreError naming the file at fault.
   */
  static open({ dir, keyFile, keyPem, create = true, readOnly = false, clock = () => new Date() }: KeyStoreOptions): KeyStore {
    if (keyFile !== undefined && keyPem !== undefined) throw new KeyStoreError(`give either a signing key file or ${SIGNING_KEY_ENV}, not both`);
    const store = new KeyStore(resolve(dir), clock, readOnly);
    if (readOnly && !existsSync(store.indexPath)) {
      throw new KeyStoreError(
        `${store.indexPath}: the shared key store is missing; refusing to generate a key on this replica (every replica must sign with the same one). ` +
          `Create it once with \`apprentice keys init --keys-dir ${store.dir}\` and mount that directory on every replica`,
      );
    }
    if (!create && !existsSync(store.indexPath)) throw new KeyStoreError(`${store.dir}: no key store here (${KEY_INDEX_FILE} is missing; the cloud creates it on first start)`);
    if (!readOnly) mkdirSync(store.dir, { recursive: true, mode: 0o700 });
    if (keyFile !== undefined) {
      if (!existsSync(keyFile)) throw new KeyStoreError(`${keyFile}: signing key file not found`);
      assertPrivateMode(keyFile);
      store.external = { key: parsePrivatePem(readFileSync(keyFile, 'utf8'), keyFile), source: 'file' };
    } else if (keyPem !== undefined && keyPem.trim() !== '') {
      store.external = { key: parsePrivatePem(keyPem, SIGNING_KEY_ENV), source: 'env' };
    }

    if (existsSync(store.indexPath)) {
      store.load();
      if (store.external) store.adoptExternal(store.external);
    } else if (store.external) {
      const { key, source } = store.external;
      store.privateKeys.set(key.keyId, key);
      store.save({ version: INDEX_VERSION, active: key.keyId, keys: [store.entry(key, source)], retired: [] });
    } else {
      const key = store.generate();
      store.save({ version: INDEX_VERSION, active: key.keyId, keys: [store.entry(key, 'generated')], retired: [] });
    }
    return store;
  }

  /** The pinned external key wins over the index (whose `active` it also becomes on open). */
  private get activeId(): string {
    return this.external?.key.keyId ?? this.index.active;
  }

  /** The key that signs releases now. Throws when its private half is not available to this process. */
  active(): SigningKey {
    this.refresh();
    const key = this.privateKeys.get(this.activeId);
    if (!key) {
      const entry = this.index.keys.find((k) => k.keyId === this.activeId);
      const from = entry?.source === 'env' ? `the ${SIGNING_KEY_ENV} variable` : 'an external key file';
      throw new KeyStoreError(`active key ${this.activeId} came from ${from}, which this process was not given; provide it again or run \`apprentice keys rotate\``);
    }
    return { ...key };
  }

  /** Public keys devices must trust (active first): every key not retired. */
  trusted(): TrustedKey[] {
    this.refresh();
    const keys = [...this.index.keys].sort((a, b) => Number(b.keyId === this.activeId) - Number(a.keyId === this.activeId));
    return keys.map((k) => ({ keyId: k.keyId, publicKeyPem: k.publicKeyPem }));
  }

  /** Every key ever known here, active first, retired last. */
  list(): KeyInfo[] {
    this.refresh();
    const live: KeyInfo[] = this.trusted().map((t) => {
      const e = this.index.keys.find((k) => k.keyId === t.keyId)!;
      return { keyId: e.keyId, status: e.keyId === this.activeId ? 'active' : 'trusted', source: e.source, createdAt: e.createdAt, publicKeyPem: e.publicKeyPem };
    });
    const retired: KeyInfo[] = this.index.retired.map((e) => ({ keyId: e.keyId, status: 'retired', source: e.source, createdAt: e.createdAt, retiredAt: e.retiredAt, publicKeyPem: e.publicKeyPem }));
    return [...live, ...retired];
  }

  /**
   * Generates a new key and (unless `activate: false`, which only stages it as trusted) makes it the
   * signing key. Older keys stay trusted until `retire()`.
   */
  rotate({ activate = true }: { activate?: boolean } = {}): KeyInfo {
    this.refresh();
    this.assertWritable('rotate keys');
    if (activate) this.assertNotPinned('rotate');
    const key = this.generate();
    const next: KeyIndex = { ...this.index, keys: [...this.index.keys, this.entry(key, 'generated')] };
    if (activate) next.active = key.keyId;
    this.save(next);
    return this.list().find((k) => k.keyId === key.keyId)!;
  }

  /** Makes a trusted key (with its private half available) the signing key. */
  activate(keyId: string): KeyInfo {
    this.refresh();
    if (keyId === this.activeId) return this.list()[0]!;
    this.assertWritable('activate a key');
    this.assertNotPinned('activate another key');
    if (!this.index.keys.some((k) => k.keyId === keyId)) throw this.unknown(keyId);
    if (!this.privateKeys.has(keyId)) throw new KeyStoreError(`key ${keyId} has no private key in ${this.dir}; it cannot sign`);
    this.save({ ...this.index, active: keyId });
    return this.list()[0]!;
  }

  /** Stops trusting a key and deletes its private key file. The active key cannot be retired. */
  retire(keyId: string): KeyInfo {
    this.refresh();
    if (keyId === this.activeId) throw new KeyStoreError(`key ${keyId} is the active signing key; rotate or activate another key first`);
    this.assertWritable('retire a key');
    const entry = this.index.keys.find((k) => k.keyId === keyId);
    if (!entry) throw this.unknown(keyId);
    this.save({
      ...this.index,
      keys: this.index.keys.filter((k) => k.keyId !== keyId),
      retired: [...this.index.retired, { ...entry, retiredAt: this.clock().toISOString() }],
    });
    // After the index: a crash in between leaves an orphan file, never a trusted key without its file.
    rmSync(join(this.dir, keyFileName(keyId)), { force: true });
    this.privateKeys.delete(keyId);
    return this.list().find((k) => k.keyId === keyId)!;
  }

  private unknown(keyId: string): KeyStoreError {
    const retired = this.index.retired.some((k) => k.keyId === keyId);
    return new KeyStoreError(retired ? `key ${keyId} is already retired` : `unknown key ${keyId} (see \`apprentice keys list\`)`);
  }

  private assertWritable(what: string): void {
    if (this.readOnly) {
      throw new KeyStoreError(
        `cannot ${what} here: the key store ${this.dir} is shared by every replica and read-only to the cloud; ` +
          `run \`apprentice keys ... --keys-dir ${this.dir}\` on an admin host, then restart the replicas (README "Running several replicas")`,
      );
    }
  }

  private assertNotPinned(what: string): void {
    if (this.external) {
      const from = this.external.source === 'env' ? SIGNING_KEY_ENV : 'the signing key file';
      throw new KeyStoreError(`cannot ${what}: the signing key is pinned by ${from}; change it there (the old key stays trusted until retired)`);
    }
  }

  private entry(key: SigningKey, source: KeySource): KeyIndex['keys'][number] {
    return { keyId: key.keyId, publicKeyPem: key.publicKeyPem, createdAt: this.clock().toISOString(), source };
  }

  private generate(): SigningKey {
    const key = generateSigningKey();
    writeFileAtomicSync(join(this.dir, keyFileName(key.keyId)), key.privateKeyPem, 0o600);
    this.privateKeys.set(key.keyId, key);
    return key;
  }

  private adoptExternal({ key, source }: { key: SigningKey; source: 'file' | 'env' }): void {
    if (this.index.retired.some((k) => k.keyId === key.keyId)) {
      throw new KeyStoreError(`the signing key given by ${source === 'env' ? SIGNING_KEY_ENV : 'file'} (${key.keyId}) was retired; refusing to sign with it`);
    }
    this.privateKeys.set(key.keyId, key);
    const known = this.index.keys.some((k) => k.keyId === key.keyId);
    if (known && this.index.active === key.keyId) return;
    if (this.readOnly) {
      // Nothing is recorded in a shared store: the key must be in it already (the CLI records it: keys init).
      if (!known) {
        const given = source === 'env' ? SIGNING_KEY_ENV : 'the signing key file';
        throw new KeyStoreError(`the signing key given by ${given} (${key.keyId}) is not in the shared key store ${this.indexPath}; record it there with \`apprentice keys init --keys-dir ${this.dir}\` (same key) on an admin host`);
      }
      return;
    }
    this.save({ ...this.index, active: key.keyId, keys: known ? this.index.keys : [...this.index.keys, this.entry(key, source)] });
  }

  private save(index: KeyIndex): void {
    writeFileAtomicSync(this.indexPath, JSON.stringify(index, null, 2) + '\n', 0o600);
    this.index = index;
    this.stamp = this.statStamp();
  }

  private statStamp(): string {
    const st = statSync(this.indexPath);
    return `${st.ino}:${st.size}:${st.mtimeMs}`;
  }

  private refresh(): void {
    if (this.statStamp() !== this.stamp) this.load();
  }

  /** Reads and checks the index and every generated key it lists. */
  private load(): void {
    const stamp = this.statStamp();
    let json: unknown;
    try {
      json = JSON.parse(readFileSync(this.indexPath, 'utf8'));
    } catch (err) {
      throw new KeyStoreError(`${this.indexPath}: not valid JSON: ${(err as Error).message}`);
    }
    const parsed = indexSchema.safeParse(json);
    if (!parsed.success) throw new KeyStoreError(`${this.indexPath}: ${formatIssues(parsed.error)}`);
    const index = parsed.data;
    if (!index.keys.some((k) => k.keyId === index.active)) throw new KeyStoreError(`${this.indexPath}: active key ${index.active} is not among its keys`);
    const privateKeys = new Map<string, SigningKey>();
    for (const entry of index.keys) {
      if (entry.source !== 'generated') continue;
      const file = join(this.dir, keyFileName(entry.keyId));
      if (!existsSync(file)) throw new KeyStoreError(`${file}: private key of trusted key ${entry.keyId} is missing`);
      assertPrivateMode(file);
      const key = parsePrivatePem(readFileSync(file, 'utf8'), file);
      if (key.keyId !== entry.keyId) throw new KeyStoreError(`${file}: holds key ${key.keyId}, but the index names it ${entry.keyId}`);
      privateKeys.set(key.keyId, key);
    }
    if (this.external) privateKeys.set(this.external.key.keyId, this.external.key);
    this.privateKeys.clear();
    for (const [id, k] of privateKeys) this.privateKeys.set(id, k);
    this.index = index;
    this.stamp = stamp;
  }
}
