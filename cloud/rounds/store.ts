import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { sha256Of } from '../../shared/manifest/artifact.js';
import type { ArtifactBlobs } from '../artifacts/types.js';

/**
 * Content-addressed artifact store under the data dir:
 *   artifacts/{sha256}.onnx            model bytes (what the manifest's sha256/length describe)
 *   artifacts/{sha256}.weights.bin     tfjs weights of the student behind it (warm start)
 *   artifacts/{sha256}.weights.json    their names/shapes and the architecture
 * Paths stored in the registry are relative to the data dir, so the dir can move.
 */
export const ARTIFACTS_DIR = 'artifacts';

export const artifactRelPath = (sha256: string): string => join(ARTIFACTS_DIR, `${sha256}.onnx`);
export const weightsBasePath = (dataDir: string, sha256: string): string => join(dataDir, ARTIFACTS_DIR, `${sha256}.weights`);
export const teacherCacheDir = (dataDir: string): string => join(dataDir, 'cache', 'teacher-logits');

/**
 * Writes a file so that a crash leaves either no file or the complete one: temp file in the same
 * directory, fsync, rename, fsync of the directory (so the rename itself is durable).
 */
export async function writeFileAtomic(path: string, data: Uint8Array): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  const dir = await open(dirname(path), 'r');
  try {
    await dir.sync();
  } catch {
    // Some filesystems refuse fsync on a directory; the rename is still atomic there.
  } finally {
    await dir.close();
  }
}

/**
 * Stores model bytes at artifacts/{sha256}.onnx (no-op when an identical file is already there), or in the
 * registry's artifact store when `blobs` is one (PostgreSQL, issue 15: every replica reads it there).
 * `relPath` is what `releases.artifact_path` records either way.
 */
export async function storeArtifact(dataDir: string, bytes: Uint8Array, blobs?: ArtifactBlobs): Promise<{ sha256: string; relPath: string }> {
  if (blobs?.backend === 'registry') {
    const { sha256, relPath } = await blobs.put('model', bytes);
    return { sha256, relPath };
  }
  const sha256 = sha256Of(bytes);
  const relPath = artifactRelPath(sha256);
  const path = join(dataDir, relPath);
  const existing = await stat(path).catch(() => undefined);
  if (!existing || existing.size !== bytes.byteLength) await writeFileAtomic(path, bytes);
  return { sha256, relPath };
}

/** Reads a stored artifact back and checks it still hashes to its name (by sha256 from the registry store when `blobs` is one). */
export async function readArtifact(dataDir: string, relPath: string, sha256: string, blobs?: ArtifactBlobs): Promise<Uint8Array> {
  if (blobs?.backend === 'registry') return blobs.readAll('model', sha256);
  const bytes = new Uint8Array(await readFile(join(dataDir, relPath)));
  const actual = sha256Of(bytes);
  if (actual !== sha256) throw new Error(`artifact ${relPath} is corrupt: sha256 ${actual}, expected ${sha256}`);
  return bytes;
}
