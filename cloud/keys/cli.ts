import { Command } from 'commander';
import { addRootCommands } from './root-cli.js';
import { KeyStore, keysDirIn, type KeyInfo } from './store.js';

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

/** The store of an existing cloud data dir; the CLI never creates one (the cloud does, on first start). */
function openStore(dataDir: string): KeyStore {
  return KeyStore.open({ dir: keysDirIn(dataDir), create: false });
}

/**
 * `apprentice keys list|rotate|activate|retire`: manages the release-signing keys in DATA/keys. A running
 * cloud picks the change up at its next signature (it re-reads the index when the file changes).
 */
export function keysCommand(): Command {
  const keys = new Command('keys').description('Manage the release-signing keys (DATA/keys)');
  const note =
    '\nNote: while the cloud runs with APPRENTICE_SIGNING_KEY (or a key file), that key signs whatever the index says.' +
    '\nDevices trust the keys of the root-signed key set: after rotate/activate/retire, run draft-keyset, sign-keyset (offline) and publish-keyset.';

  keys
    .command('list')
    .description('List keys: active (signs), trusted (in device bundles), retired')
    .requiredOption('--data-dir <dir>', 'the cloud data directory')
    .option('--json', 'print JSON', false)
    .addHelpText('after', '\nExample:\n  apprentice keys list --data-dir /var/lib/apprentice')
    .action((o: { dataDir: string; json: boolean }) => {
      print(openStore(o.dataDir).list(), o.json);
    });

  keys
    .command('rotate')
    .description('Generate a new key and make it the signing key; older keys stay trusted until retired')
    .requiredOption('--data-dir <dir>', 'the cloud data directory')
    .option('--stage', 'only add the key as trusted (for device bundles); activate it later', false)
    .option('--json', 'print JSON', false)
    .addHelpText('after', `\nExample:\n  apprentice keys rotate --data-dir /var/lib/apprentice${note}`)
    .action((o: { dataDir: string; stage: boolean; json: boolean }) => {
      const k = openStore(o.dataDir).rotate({ activate: !o.stage });
      process.stdout.write(o.json ? JSON.stringify(k, null, 2) + '\n' : `${o.stage ? 'staged' : 'rotated: signing with'} ${k.keyId}\n`);
    });

  keys
    .command('activate')
    .description('Make a trusted key the signing key')
    .argument('<keyId>', '16-hex-digit key id (see keys list)')
    .requiredOption('--data-dir <dir>', 'the cloud data directory')
    .addHelpText('after', `\nExample:\n  apprentice keys activate 0123456789abcdef --data-dir /var/lib/apprentice${note}`)
    .action((keyId: string, o: { dataDir: string }) => {
      openStore(o.dataDir).activate(keyId);
      process.stdout.write(`signing with ${keyId}\n`);
    });

  keys
    .command('retire')
    .description('Stop trusting a key (not the active one) and delete its private key file')
    .argument('<keyId>', '16-hex-digit key id (see keys list)')
    .requiredOption('--data-dir <dir>', 'the cloud data directory')
    .addHelpText('after', '\nExample:\n  apprentice keys retire 0123456789abcdef --data-dir /var/lib/apprentice')
    .action((keyId: string, o: { dataDir: string }) => {
      openStore(o.dataDir).retire(keyId);
      process.stdout.write(`retired ${keyId}\n`);
    });
  return addRootCommands(keys);
}
