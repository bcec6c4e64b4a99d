import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, mkdir, open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { agentPath, type AgentFile, type AgentManifest } from '../../shared/protocol/index.js';
import { fsyncDir } from '../updates/fsutil.js';
import type { AgentLayout } from './layout.js';
import { readTar, TarError } from './ustar.js';

export type UnpackReason = 'unpack_failed' | 'listing_mismatch' | 'no_space';

export class UnpackError extends Error {
  override readonly name = 'UnpackError';
  constructor(
    readonly reason: UnpackReason,
    message: string,
  ) {
    super(message);
  }
}

/** Whether creating a directory in `dir` fails with EROFS. */
async function readOnly(dir: string): Promise<boolean> {
  const probe = join(dir, `.rw-probe-${process.pid}`);
  try {
    await mkdir(probe);
    await rm(probe, { recursive: true, force: true });
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EROFS';
  }
}

/** `./a/b/` → `a/b`; null for the archive root itself. Refuses absolute paths, `..`, empty segments. */
export function entryPath(raw: string): string | null {
  let p = raw;
  while (p.startsWith('./')) p = p.slice(2);
  if (p.endsWith('/')) p = p.slice(0, -1);
  if (p === '' || p === '.') return null;
  if (!agentPath.safeParse(p).success) throw new UnpackError('unpack_failed', `entry ${JSON.stringify(raw.slice(0, 200))}: absolute, "..", or empty segments are not allowed`);
  return p;
}

/**
 * Unpacks the verified tarball into `<root>/<version>.partial`, checking each entry against the signed
 * listing as it comes (an unlisted path or another size is refused before its bytes are written),
 * hashing while writing, then checks that nothing is missing and every sha256 and mode matches. Every
 * file and directory is fsynced, then the directory is renamed to `<root>/<version>`. On any failure
 * the `.partial` directory is removed (when the file system still allows it; otherwise the next start's
 * sweep does) and an UnpackError says why: `no_space` for a full disk, `unpack_failed` for a read-only or
 * failing one.
 */
export async function unpackBundle(tarball: string, layout: AgentLayout, manifest: AgentManifest): Promise<{ dir: string; files: number; bytes: number }> {
  const partial = layout.partialDir(manifest.version);
  await rm(partial, { recursive: true, force: true });
  await mkdir(partial, { recursive: true, mode: 0o755 });
  const listing = new Map<string, AgentFile>(manifest.files.map((f) => [f.path, f]));
  const seen = new Map<string, string>();
  const dirs = new Set<string>([partial]);
  let current: { file: AgentFile; fh: FileHandle; hash: ReturnType<typeof createHash>; written: number } | null = null;
  let bytes = 0;
  try {
    // pipeline: a read error reaches the gunzip stream (and so the reader) instead of going unhandled.
    const gunzip = createGunzip();
    pipeline(createReadStream(tarball), gunzip, () => undefined);
    await readTar(gunzip, {
      entry: async (h) => {
        const p = entryPath(h.path);
        if (p === null) return;
        if (h.type === 'dir') {
          if (listing.has(p)) throw new UnpackError('listing_mismatch', `${p}: a directory in the archive, a file in the listing`);
          const d = join(partial, p);
          await mkdir(d, { recursive: true, mode: 0o755 });
          dirs.add(d);
          return;
        }
        const file = listing.get(p);
        if (!file) throw new UnpackError('listing_mismatch', `${p}: in the archive but not in the signed listing`);
        if (seen.has(p)) throw new UnpackError('listing_mismatch', `${p}: twice in the archive`);
        if (h.size !== file.bytes) throw new UnpackError('listing_mismatch', `${p}: ${h.size} bytes in the archive, ${file.bytes} in the listing`);
        if ((h.mode & 0o7777) !== file.mode) throw new UnpackError('listing_mismatch', `${p}: mode ${(h.mode & 0o7777).toString(8)} in the archive, ${file.mode.toString(8)} in the listing`);
        const target = join(partial, p);
        await mkdir(dirname(target), { recursive: true, mode: 0o755 });
        dirs.add(dirname(target));
        // 'wx': never through an existing name (there are no links, and nothing is written twice).
        current = { file, fh: await open(target, 'wx', 0o600), hash: createHash('sha256'), written: 0 };
      },
      data: async (chunk) => {
        const c = current!;
        c.hash.update(chunk);
        c.written += chunk.length;
        await c.fh.write(chunk);
      },
      end: async () => {
        const c = current!;
        current = null;
        await c.fh.sync();
        await c.fh.chmod(c.file.mode);
        await c.fh.close();
        const sha = c.hash.digest('hex');
        if (sha !== c.file.sha256) throw new UnpackError('listing_mismatch', `${c.file.path}: sha256 ${sha} is not the listed ${c.file.sha256}`);
        seen.set(c.file.path, sha);
        bytes += c.written;
      },
    });
    const missing = manifest.files.filter((f) => !seen.has(f.path)).map((f) => f.path);
    if (missing.length) throw new UnpackError('listing_mismatch', `${missing.length} listed file(s) missing from the archive: ${missing.slice(0, 5).join(', ')}`);
    // The modes as they are on disk (umask and chmod have had their say).
    for (const f of manifest.files) {
      const st = await stat(join(partial, f.path));
      if (!st.isFile() || (st.mode & 0o7777) !== f.mode || st.size !== f.bytes) throw new UnpackError('listing_mismatch', `${f.path}: on disk not a ${f.bytes}-byte file with mode ${f.mode.toString(8)}`);
    }
    for (const d of [...dirs].sort((a, b) => b.length - a.length)) {
      await chmod(d, 0o755);
      await fsyncDir(d);
    }
    const final = layout.versionDir(manifest.version);
    await rm(final, { recursive: true, force: true });
    await rename(partial, final);
    await fsyncDir(layout.root);
    return { dir: final, files: seen.size, bytes };
  } catch (err) {
    const c = current as { fh: FileHandle } | null;
    await c?.fh.close().catch(() => undefined);
    // Best effort: on a file system gone read-only this fails too; the next start sweeps it (AgentLayout.sweep).
    const left = await rm(partial, { recursive: true, force: true }).then(
      () => '',
      (e: NodeJS.ErrnoException) => `; ${partial} not removed (${e.code ?? e.message}), swept at the next start`,
    );
    if (err instanceof UnpackError) throw left ? new UnpackError(err.reason, `${err.message}${left}`) : err;
    if (err instanceof TarError) throw new UnpackError('unpack_failed', err.message);
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EDQUOT') throw new UnpackError('no_space', `unpacking ${manifest.version}: ${(err as Error).message}${left}`);
    if (code === 'Z_DATA_ERROR' || code === 'Z_BUF_ERROR' || code === 'EEXIST' || code === 'ENOTDIR' || code === 'EISDIR') throw new UnpackError('unpack_failed', (err as Error).message);
    // The data dir went read-only (an SD card's emergency remount) or failing: refused, reported, nothing
    // switched. A file system that turns read-only mid-write can fail the write in hand with another code
    // (ENOENT for a directory just created), so any other system error is checked against a probe write.
    if (code !== undefined && /^E[A-Z]+$/.test(code)) {
      const ro = code === 'EROFS' || (await readOnly(layout.root));
      throw new UnpackError('unpack_failed', `unpacking ${manifest.version}: ${ro && code !== 'EROFS' ? 'the file system went read-only (EROFS): ' : ''}${(err as Error).message}${left}`);
    }
    throw err;
  }
}
