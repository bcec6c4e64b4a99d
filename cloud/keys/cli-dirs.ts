import type { Command } from 'commander';
import { UsageError } from '../../shared/cli/errors.js';
import { KeyStore, KeyStoreError, keysDirIn, SIGNING_KEY_ENV } from './store.js';

/** `--data-dir` or `--keys-dir`, as the key commands take them. */
export interface KeyDirOptions {
  dataDir?: string;
  keysDir?: string;
}

/** Adds the two mutually exclusive ways to name a key store to a key command. */
export function keyDirOptions(cmd: Command): Command {
  return cmd
    .option('--data-dir <dir>', "a cloud's data directory (keys in DIR/keys, key set in DIR/keyset.json)")
    .option('--keys-dir <dir>', 'a shared key store every replica mounts (keys.sharedDir): keys and keyset.json in DIR');
}

/**
 * The key store's directory and the directory of its keyset.json: DATA/keys and DATA for a single cloud, or
 * the shared directory for both (README "Running several replicas"). Exactly one option must be given.
 */
export function keyDirs(o: KeyDirOptions): { keysDir: string; trustDir: string } {
  if ((o.dataDir === undefined) === (o.keysDir === undefined)) throw new UsageError('give either --data-dir (a single cloud) or --keys-dir (a shared key store), exactly one');
  return o.keysDir !== undefined ? { keysDir: o.keysDir, trustDir: o.keysDir } : { keysDir: keysDirIn(o.dataDir!), trustDir: o.dataDir! };
}

/** The existing store of a data dir or a shared dir; the CLI never creates one here (`keys init` does). */
export function openStoreAt(o: KeyDirOptions): KeyStore {
  return KeyStore.open({ dir: keyDirs(o).keysDir, create: false });
}

/**
 * The store, able to sign: when the active key's private half is kept outside the directory (`keys init
 * --signing-key-file`, shared stores), it comes from APPRENTICE_SIGNING_KEY, read-only, so the index is not
 * changed. `publish-keyset` co-signs the first key set with it.
 */
export function openSigningStoreAt(o: KeyDirOptions, env: NodeJS.ProcessEnv = process.env): KeyStore {
  const store = openStoreAt(o);
  try {
    store.active();
    return store;
  } catch (err) {
    const pem = env[SIGNING_KEY_ENV];
    if (!(err instanceof KeyStoreError) || pem === undefined || pem.trim() === '') throw err;
    return KeyStore.open({ dir: keyDirs(o).keysDir, readOnly: true, keyPem: pem });
  }
}
