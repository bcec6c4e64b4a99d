import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import Database from 'better-sqlite3';
import { z } from 'zod';
import { UsageError } from '../../shared/cli/errors.js';
import { FILE_STORE_DIRS } from '../artifacts/file-blobs.js';
import { KEYS_DIR, KEY_INDEX_FILE } from '../keys/store.js';
import { KEYSET_FILE } from '../keys/keyset-file.js';

/**
 * Backup and restore of a cloud data dir (issue 9, item 10).
 *
 * A backup is a directory:
 * - `registry.db`: an online SQLite backup (better-sqlite3 `.backup()`, the SQLite backup API) taken
 *   while the cloud keeps writing; the copy is one consistent snapshot, checked with
 *   `PRAGMA integrity_check` before the backup is declared good;
 * - `keys/`: the release-signing key store (private keys, mode 0600: protect the backup like the key);
 * - the small state files (`admin-token`, `mqtt-cloud-password`, `keyset.json`) and the file artifact
 *   store's directories (`artifacts/`, `agents/`, `teachers/`, `datasets/`: cloud/artifacts), when present;
 * - `backup.json`: what was copied, with the size and sha256 of every file, checked by `restore`.
 *
 * The offline root key (`keys init-root`) is never in a data dir, so never in a backup.
 */

export const BACKUP_MANIFEST = 'backup.json';
const REGISTRY_FILE = 'registry.db';
const STATE_FILES = ['admin-token', 'mqtt-cloud-password', KEYSET_FILE];
// Every directory of the file artifact store: release models, agent tarballs (issue 14), teacher files, datasets.
const TREES = [KEYS_DIR, ...FILE_STORE_DIRS];
/** Files whose content is secret: written 0600 on both sides, their directories 0700. */
const SECRET = (rel: string) => rel === 'admin-token' || rel === 'mqtt-cloud-password' || rel.startsWith(`${KEYS_DIR}/`);

const manifestSchema = z.strictObject({
  format: z.literal('apprentice-cloud-backup/1'),
  createdAt: z.string(),
  source: z.string(),
  registry: z.strictObject({ pages: z.number().int().min(0), integrity: z.literal('ok') }),
  files: z.array(z.strictObject({ path: z.string().min(1), bytes: z.number().int().min(0), sha256: z.string().regex(/^[0-9a-f]{64}$/) })),
});
export type BackupManifest = z.infer<typeof manifestSchema>;

export interface BackupResult {
  out: string;
  manifest: BackupManifest;
}

/**
 * Backs up `dataDir` into the new directory `out` while a cloud may be running on it.
 *
 * @example
 * await backupCloud({ dataDir: '/var/lib/apprentice', out: '/backups/apprentice-2026-11-30' });
 */
export async function backupCloud({ dataDir, out, now = new Date() }: { dataDir: string; out: string; now?: Date }): Promise<BackupResult> {
  const source = join(dataDir, REGISTRY_FILE);
  if (!existsSync(source)) throw new UsageError(`--data-dir: ${dataDir} has no ${REGISTRY_FILE} (not a cloud data dir; a cloud whose registry is on PostgreSQL (registry.url) is backed up with pg_dump)`);
  if (!existsSync(join(dataDir, KEYS_DIR, KEY_INDEX_FILE))) throw new UsageError(`--data-dir: ${dataDir} has no key store (${KEYS_DIR}/${KEY_INDEX_FILE})`);
  if (existsSync(out) && readdirSync(out).length > 0) throw new UsageError(`--out: ${out} exists and is not empty`);
  mkdirSync(out, { recursive: true, mode: 0o700 });
  chmodSync(out, 0o700);

  // Online backup: the source stays open for the cloud's writers. All pages in one step: the copy is a
  // single read snapshot and is not restarted by writes the cloud makes meanwhile (WAL readers do not block writers).
  const db = new Database(source, { readonly: true, fileMustExist: true });
  let pages: number;
  try {
    db.pragma('busy_timeout = 10000');
    const r = await db.backup(join(out, REGISTRY_FILE), { progress: () => 1 << 30 });
    pages = r.totalPages;
  } finally {
    db.close();
  }
  const integrity = checkIntegrity(join(out, REGISTRY_FILE));
  if (integrity !== 'ok') throw new Error(`the registry copy failed its integrity check: ${integrity}`);

  for (const f of STATE_FILES) if (existsSync(join(dataDir, f))) copyFile(join(dataDir, f), join(out, f), SECRET(f));
  for (const t of TREES) for (const rel of listTree(dataDir, t)) copyFile(join(dataDir, rel), join(out, rel), SECRET(rel));

  const files = listTree(out, '.').filter((p) => p !== BACKUP_MANIFEST).map((p) => describe(out, p));
  const manifest: BackupManifest = { format: 'apprentice-cloud-backup/1', createdAt: now.toISOString(), source: dataDir, registry: { pages, integrity: 'ok' }, files };
  writeFileSync(join(out, BACKUP_MANIFEST), JSON.stringify(manifest, null, 2) + '\n', { mode: 0o600 });
  return { out, manifest };
}

/**
 * Restores a backup into `dataDir`, which must not hold a registry yet (a fresh data dir). Every file
 * is checked against `backup.json` (size, sha256) before anything is written, and the registry's
 * integrity again after.
 */
export async function restoreCloud({ from, dataDir }: { from: string; dataDir: string }): Promise<BackupManifest> {
  const manifest = readManifest(from);
  if (existsSync(join(dataDir, REGISTRY_FILE))) throw new UsageError(`--data-dir: ${dataDir} already has a ${REGISTRY_FILE}; restore into a fresh data dir`);
  if (existsSync(join(dataDir, KEYS_DIR))) throw new UsageError(`--data-dir: ${dataDir} already has a key store (${KEYS_DIR}/); restore into a fresh data dir`);
  if (!manifest.files.some((f) => f.path === REGISTRY_FILE)) throw new UsageError(`--from: ${BACKUP_MANIFEST} lists no ${REGISTRY_FILE}`);
  for (const f of manifest.files) {
    if (f.path.startsWith('..') || f.path.startsWith('/') || f.path.split('/').includes('..')) throw new UsageError(`--from: ${BACKUP_MANIFEST} names a path outside the backup: ${f.path}`);
    const p = join(from, f.path);
    if (!existsSync(p)) throw new UsageError(`--from: ${f.path} is listed in ${BACKUP_MANIFEST} but missing`);
    const got = describe(from, f.path);
    if (got.bytes !== f.bytes || got.sha256 !== f.sha256) throw new UsageError(`--from: ${f.path} does not match ${BACKUP_MANIFEST} (corrupt or changed backup)`);
  }
  mkdirSync(dataDir, { recursive: true });
  for (const f of manifest.files) copyFile(join(from, f.path), join(dataDir, f.path), SECRET(f.path));
  const integrity = checkIntegrity(join(dataDir, REGISTRY_FILE));
  if (integrity !== 'ok') throw new Error(`the restored registry failed its integrity check: ${integrity}`);
  return manifest;
}

function readManifest(from: string): BackupManifest {
  const p = join(from, BACKUP_MANIFEST);
  if (!existsSync(p)) throw new UsageError(`--from: ${from} has no ${BACKUP_MANIFEST} (not an apprentice backup)`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(p, 'utf8'));
  } catch (err) {
    throw new UsageError(`--from: ${BACKUP_MANIFEST} is not JSON (${(err as Error).message})`);
  }
  const parsed = manifestSchema.safeParse(raw);
  if (!parsed.success) {
    const i = parsed.error.issues[0]!;
    throw new UsageError(`--from: ${BACKUP_MANIFEST}: ${i.path.join('.') || '(root)'}: ${i.message}`);
  }
  return parsed.data;
}

function checkIntegrity(path: string): string {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    const rows = db.pragma('integrity_check') as { integrity_check: string }[];
    return rows.map((r) => r.integrity_check).join('; ');
  } finally {
    db.close();
  }
}

/** Files under `root/sub` as paths relative to `root` ('/'-separated); none when it does not exist. */
function listTree(root: string, sub: string): string[] {
  const base = join(root, sub);
  if (!existsSync(base)) return [];
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && !e.name.endsWith('.tmp')) out.push(relative(root, p).split(sep).join('/'));
    }
  };
  walk(base);
  return out.sort();
}

function describe(root: string, rel: string): { path: string; bytes: number; sha256: string } {
  const p = join(root, rel);
  return { path: rel, bytes: statSync(p).size, sha256: createHash('sha256').update(readFileSync(p)).digest('hex') };
}

function copyFile(from: string, to: string, secret: boolean): void {
  mkdirSync(dirname(to), { recursive: true, mode: secret ? 0o700 : 0o755 });
  copyFileSync(from, to);
  if (secret) chmodSync(to, 0o600);
}
