import { resolve } from 'node:path';
import { keysMode, type CloudConfig } from '../config/schema.js';
import { KeyStore, keysDirIn, SIGNING_KEY_ENV } from './store.js';

/** Where the cloud's keys and its published key set live, and whether several replicas share them. */
export interface CloudKeys {
  keys: KeyStore;
  /** The directory holding keyset.json: the data dir (local) or the shared key dir (shared). */
  trustDir: string;
  shared: boolean;
}

/**
 * Opens the release-signing keys the config names (README "Running several replicas"):
 *
 * - `local` (default): DATA/keys, generated on first start; DATA/keyset.json.
 * - `shared`: `keys.sharedDir` holds index.json, the PEMs of generated keys and keyset.json, read-only to the
 *   cloud. A private key may instead come from `keys.signingKeyFile` or APPRENTICE_SIGNING_KEY if the index
 *   lists it. A missing store is a KeyStoreError (exit 2): no replica ever generates its own key.
 *
 * @example
 * const { keys, trustDir } = openCloudKeys(cfg, resolve(cfg.dataDir));
 */
export function openCloudKeys(cfg: Pick<CloudConfig, 'keys' | 'cluster'>, dataDir: string, env: NodeJS.ProcessEnv = process.env): CloudKeys {
  const keyPem = env[SIGNING_KEY_ENV];
  const external = { keyFile: cfg.keys.signingKeyFile, keyPem: keyPem === undefined || keyPem.trim() === '' ? undefined : keyPem };
  if (keysMode(cfg) === 'shared') {
    // The schema requires sharedDir in shared mode; checked again for callers that build a config by hand.
    if (cfg.keys.sharedDir === undefined) throw new Error('keys.mode "shared" needs keys.sharedDir');
    const dir = resolve(cfg.keys.sharedDir);
    return { keys: KeyStore.open({ dir, readOnly: true, ...external }), trustDir: dir, shared: true };
  }
  return { keys: KeyStore.open({ dir: keysDirIn(dataDir), ...external }), trustDir: dataDir, shared: false };
}
