import { Command } from 'commander';
import { UsageError } from '../../shared/cli/errors.js';
import { loadCloudConfig } from '../config/load.js';
import { redactUrl } from '../registry/pg.js';
import { backupCloud, restoreCloud } from './backup.js';

/** Refuses (exit 2) when the cloud's registry is on PostgreSQL: this command copies a SQLite data dir; pg_dump backs up PostgreSQL. */
function refusePostgres(configFile: string | undefined): void {
  const url = loadCloudConfig({ file: configFile }).registry.url;
  if (!url) return;
  throw new UsageError(
    `the registry is on PostgreSQL (registry.url ${redactUrl(url)}): apprentice backup copies a SQLite data dir. Back up the database with pg_dump ` +
      `(e.g. pg_dump --format=custom --file apprentice.dump '<registry.url>'; it holds every table and the artifacts) and keep the shared keys dir (keys.sharedDir) with it; README "Backup and restore"`,
  );
}

/** `apprentice backup`: an online backup of a cloud data dir (registry + key store + state files + artifacts). */
export function backupCommand(): Command {
  return new Command('backup')
    .description("Back up a cloud's data dir while it runs: the registry (online SQLite backup), the key store, state files and artifacts")
    .requiredOption('--data-dir <dir>', 'the cloud data directory')
    .requiredOption('--out <dir>', 'a new (or empty) directory for the backup; created with mode 0700')
    .option('--config <file>', "the cloud's config file: refused when its registry.url (or APPRENTICE_REGISTRY_URL) is PostgreSQL (use pg_dump)")
    .option('--json', 'print the backup manifest as JSON', false)
    .addHelpText(
      'after',
      '\nThe backup holds the release-signing private keys: keep it as safe as the keys. The offline root key is not\n' +
        'in a data dir and so never in a backup: keep it offline (README "Backup and restore").\n\nExample:\n  apprentice backup --data-dir /var/lib/apprentice --out /backups/apprentice-$(date +%F)',
    )
    .action(async (o: { dataDir: string; out: string; config?: string; json: boolean }) => {
      refusePostgres(o.config);
      const { out, manifest } = await backupCloud({ dataDir: o.dataDir, out: o.out });
      if (o.json) process.stdout.write(JSON.stringify(manifest, null, 2) + '\n');
      else {
        const bytes = manifest.files.reduce((a, f) => a + f.bytes, 0);
        process.stdout.write(`backup written to ${out}: ${manifest.files.length} files, ${bytes} bytes, registry ${manifest.registry.pages} pages (integrity ok)\n`);
      }
    });
}

/** `apprentice restore`: a backup into a fresh data dir, every file checked against the backup's manifest. */
export function restoreCommand(): Command {
  return new Command('restore')
    .description('Restore a backup (apprentice backup) into a fresh cloud data dir; then start the cloud on it')
    .requiredOption('--from <dir>', 'the backup directory')
    .requiredOption('--data-dir <dir>', 'the data directory to create (must not hold a registry or key store)')
    .addHelpText('after', '\nExample:\n  apprentice restore --from /backups/apprentice-2026-11-30 --data-dir /var/lib/apprentice\n  apprentice cloud --data-dir /var/lib/apprentice')
    .action(async (o: { from: string; dataDir: string }) => {
      const m = await restoreCloud({ from: o.from, dataDir: o.dataDir });
      process.stdout.write(`restored ${m.files.length} files from the backup of ${m.createdAt} into ${o.dataDir}\n`);
    });
}
