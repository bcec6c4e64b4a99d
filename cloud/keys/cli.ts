import { Command } from 'commander';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError } from '../../shared/cli/errors.js';
import { keyDirOptions, openStoreAt, type KeyDirOptions } from './cli-dirs.js';
import { addRootCommands } from './root-cli.js';
import { KEY_INDEX_FILE, KeyStore, SIGNING_KEY_ENV, type KeyInfo } from './store.js';

function print(keys: KeyInfo[], json: boolean): void {
  if (json) {
    process.stdout.write(JSON.stringify(keys, null, 2) + '\n');
    return;
  }
  const rows = keys.map((k) => [k.keyId, k.status, k.source, k.createdAt, k.retiredAt ?? '']);
  const header = ['KEY ID', 'STATUS', 'SOURCE', 'CREATED', 'RETIRED'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  process.stdout.write([line(header), ...rows.map(line)].join('\n') + '\n');
}


/**
 * `apprentice keys list|rotate|activate|retire`: manages the release-signing keys in DATA/keys. A running
 * cloud picks the change up at its next signature (it re-reads the index when the file changes).
 */
export function keysCommand(): Command {
  const keys = new Command('keys').description('Manage the release-signing keys (DATA/keys, or a shared --keys-dir)');
  const note =
    '\nNote: while the cloud runs with APPRENTICE_SIGNING_KEY (or a key file), that key signs whatever the index says.' +
    '\nDevices trust the keys of the root-signed key set: after rotate/activate/retire, run draft-keyset, sign-keyset (offline) and publish-keyset.' +
    '\nA shared --keys-dir (several replicas) is read-only to the cloud: change it here, then restart the replicas.';

  keys
    .command('init')
    .description('Create a shared key store for several replicas (keys.sharedDir): a new signing key, or record the one given')
    .requiredOption('--keys-dir <dir>', 'the directory to create (mode 0700); mount it on every replica')
    .option('--signing-key-file <file>', `record this key (PEM, 0600) as the signing key instead of generating one; its private half stays in the file (or ${SIGNING_KEY_ENV})`)
    .option('--json', 'print JSON', false)
    .addHelpText('after', '\nExample:\n  apprentice keys init --keys-dir /srv/apprentice/keys\n  apprentice keys init --keys-dir /srv/apprentice/keys --signing-key-file /srv/secrets/signing.pem')
    .action((o: { keysDir: string; signingKeyFile?: string; json: boolean }) => {
      const envPem = process.env[SIGNING_KEY_ENV];
      const external = o.signingKeyFile !== undefined || (envPem !== undefined && envPem.trim() !== '');
      if (existsSync(join(o.keysDir, KEY_INDEX_FILE)) && !external) throw new UsageError(`${o.keysDir}: a key store exists already (see keys list --keys-dir; rotate to add a key)`);
      const store = KeyStore.open({ dir: o.keysDir, keyFile: o.signingKeyFile, keyPem: o.signingKeyFile === undefined ? envPem : undefined });
      const list = store.list();
      process.stdout.write(o.json ? JSON.stringify(list, null, 2) + '\n' : `key store ${store.dir}: signing with ${list[0]!.keyId} (${list[0]!.source})\n`);
    });

  keyDirOptions(keys
    .command('list'))
    .description('List keys: active (signs), trusted (in device bundles), retired')
    .option('--json', 'print JSON', false)
    .addHelpText('after', '\nExample:\n  apprentice keys list --data-dir /var/lib/apprentice')
    .action((o: KeyDirOptions & { json: boolean }) => {
      print(openStoreAt(o).list(), o.json);
    });

  keyDirOptions(keys
    .command('rotate'))
    .description('Generate a new key and make it the signing key; older keys stay trusted until retired')
    .option('--stage', 'only add the key as trusted (for device bundles); activate it later', false)
    .option('--json', 'print JSON', false)
    .addHelpText('after', `\nExample:\n  apprentice keys rotate --data-dir /var/lib/apprentice${note}`)
    .action((o: KeyDirOptions & { stage: boolean; json: boolean }) => {
      const k = openStoreAt(o).rotate({ activate: !o.stage });
      process.stdout.write(o.json ? JSON.stringify(k, null, 2) + '\n' : `${o.stage ? 'staged' : 'rotated: signing with'} ${k.keyId}\n`);
    });

  keyDirOptions(keys
    .command('activate'))
    .description('Make a trusted key the signing key')
    .argument('<keyId>', '16-hex-digit key id (see keys list)')
    .addHelpText('after', `\nExample:\n  apprentice keys activate 0123456789abcdef --data-dir /var/lib/apprentice${note}`)
    .action((keyId: string, o: KeyDirOptions) => {
      openStoreAt(o).activate(keyId);
      process.stdout.write(`signing with ${keyId}\n`);
    });

  keyDirOptions(keys
    .command('retire'))
    .description('Stop trusting a key (not the active one) and delete its private key file')
    .argument('<keyId>', '16-hex-digit key id (see keys list)')
    .addHelpText('after', '\nExample:\n  apprentice keys retire 0123456789abcdef --data-dir /var/lib/apprentice')
    .action((keyId: string, o: KeyDirOptions) => {
      openStoreAt(o).retire(keyId);
      process.stdout.write(`retired ${keyId}\n`);
    });
  return addRootCommands(keys);
}
