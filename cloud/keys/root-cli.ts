import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { signKeySet, trustedKeyFromPem } from '../../shared/manifest/index.js';
import { UsageError } from '../../shared/cli/errors.js';
import { writeFileAtomicSync } from './atomic.js';
import { draftKeySet, publishKeySet, readPublishedKeySet } from './keyset-file.js';
import { initRoot, readRootKey } from './root.js';
import { keyDirOptions, keyDirs, openSigningStoreAt, openStoreAt, type KeyDirOptions } from './cli-dirs.js';

function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`${file}: ${(err as Error).message}`);
  }
}

function readJson(file: string): unknown {
  try {
    return JSON.parse(readText(file));
  } catch (err) {
    throw err instanceof UsageError ? err : new UsageError(`${file}: not JSON: ${(err as Error).message}`);
  }
}

/**
 * The root-of-trust ceremony (README "Root of trust"): `init-root` and `sign-keyset` run on an offline
 * admin machine; `draft-keyset` and `publish-keyset` on the cloud host, which never sees the root key.
 */
export function addRootCommands(keys: Command): Command {
  keys
    .command('init-root')
    .description('Create the offline root key (admin machine; keep FILE off the cloud)')
    .requiredOption('--out <file>', 'where to write the root private key (0600); FILE.pub gets the public key')
    .addHelpText('after', '\nExample:\n  apprentice keys init-root --out /media/usb/apprentice-root.pem')
    .action((o: { out: string }) => {
      const k = initRoot(o.out);
      process.stdout.write(`root ${k.keyId}\npublic key: ${o.out}.pub (give it to the cloud: keys draft-keyset --root-pub)\n`);
    });

  keyDirOptions(keys
    .command('draft-keyset')
    .description('Prepare the next unsigned key set from the key store (after rotate / activate / retire)'))
    .requiredOption('--root-pub <file>', "the root's public key (PEM)")
    .requiredOption('--out <file>', 'where to write the unsigned key set (JSON)')
    .option('--expires-days <n>', 'days until the key set expires', '365')
    .option('--revoke <keyId...>', 'revoke these release keys (their releases are refused even when installed)')
    .addHelpText('after', '\nExample:\n  apprentice keys draft-keyset --data-dir /var/lib/apprentice --root-pub root.pem.pub --out draft.json --revoke 0123456789abcdef')
    .action((o: KeyDirOptions & { rootPub: string; out: string; expiresDays: string; revoke?: string[] }) => {
      const days = Number(o.expiresDays);
      if (!Number.isInteger(days) || days < 1 || days > 3650) throw new UsageError('--expires-days: expected an integer from 1 to 3650');
      let root;
      try {
        root = trustedKeyFromPem(readText(o.rootPub));
      } catch (err) {
        throw err instanceof UsageError ? err : new UsageError(`--root-pub ${o.rootPub}: ${(err as Error).message}`);
      }
      const store = openStoreAt(o);
      const draft = draftKeySet({ keys: store.list(), root, previous: readPublishedKeySet(keyDirs(o).trustDir)?.keyset, expiresDays: days, revoke: o.revoke ?? [] });
      writeFileAtomicSync(o.out, JSON.stringify(draft, null, 2) + '\n', 0o644);
      process.stdout.write(`key set version ${draft.version}: ${draft.keys.length} release key(s), ${draft.revoked.length} revoked -> ${o.out}\n`);
    });

  keys
    .command('sign-keyset')
    .description('Sign a drafted key set with the root (admin machine); --old-root for a root rotation')
    .requiredOption('--root <file>', 'the root private key (the new one, on rotation)')
    .option('--old-root <file>', 'the current root, which must vouch for a new root')
    .requiredOption('--in <file>', 'the unsigned key set (keys draft-keyset)')
    .requiredOption('--out <file>', 'where to write the signed key set')
    .addHelpText('after', '\nExample:\n  apprentice keys sign-keyset --root /media/usb/apprentice-root.pem --in draft.json --out signed.json')
    .action((o: { root: string; oldRoot?: string; in: string; out: string }) => {
      const root = readRootKey(o.root);
      const signers = [root.privateKeyPem, ...(o.oldRoot ? [readRootKey(o.oldRoot).privateKeyPem] : [])];
      const draft = readJson(o.in) as Parameters<typeof signKeySet>[0];
      if ((draft as { root?: { keyId?: string } }).root?.keyId !== root.trusted.keyId) throw new UsageError(`--root ${o.root} is not the key set's root`);
      let signed;
      try {
        signed = signKeySet(draft, signers);
      } catch (err) {
        throw new UsageError(`${o.in}: ${(err as Error).message}`);
      }
      writeFileAtomicSync(o.out, JSON.stringify(signed, null, 2) + '\n', 0o644);
      process.stdout.write(`signed key set version ${signed.keyset.version} -> ${o.out}\n`);
    });

  keyDirOptions(keys
    .command('publish-keyset')
    .description('Check a signed key set against the published one and publish it (the cloud retains it on trust/keyset)'))
    .requiredOption('--in <file>', 'the signed key set (keys sign-keyset)')
    .addHelpText('after', '\nExample:\n  apprentice keys publish-keyset --data-dir /var/lib/apprentice --in signed.json\n  apprentice keys publish-keyset --keys-dir /srv/apprentice/keys --in signed.json   (shared by replicas)')
    .action((o: KeyDirOptions & { in: string }) => {
      const store = openSigningStoreAt(o);
      const { verdict, path } = publishKeySet(keyDirs(o).trustDir, readJson(o.in), store.active());
      process.stdout.write(`published key set version ${verdict.keyset.version} (${verdict.how}) -> ${path}; a running cloud retains it within seconds\n`);
    });
  return keys;
}
