import { createReadStream } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open as openFile, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import type { Logger } from '../../shared/log/index.js';
import { piecesOf } from './chunks.js';
import { checkExpect, checkRead, refusePut } from './refusal.js';
import { ArtifactUnavailableError, type ArtifactBlobs, type ArtifactKind, type PutRefusal } from './types.js';

/** The data dir's directories the file store writes (what a backup of the data dir must copy). */
export const FILE_STORE_DIRS = ['artifacts', 'agents', 'teachers', 'datasets'] as const;

/** Where the file store keeps each kind, relative to the data dir (model and agent paths are the historic ones). */
export function fileRelPath(kind: ArtifactKind, sha256: string): string {
  switch (kind) {
    case 'model':
      return join('artifacts', `${sha256}.onnx`);
    case 'agent':
      return join('agents', `${sha256}.tar.gz`);
    case 'teacher':
      return join('teachers', `${sha256}.onnx`);
    case 'dataset':
      return join('datasets', sha256);
  }
}

export interface FileBlobsOptions {
  dataDir: string;
  log: Logger;
  refused?: (reason: PutRefusal) => void;
}

/**
 * Artifacts as files under the data dir (the SQLite default: one process, one disk). A put streams into a temp
 * file beside the target while hashing, checks it, fsyncs and renames it into place, so a reader sees the
 * whole file or none; the same content already there is kept.
 */
export function fileBlobs(o: FileBlobsOptions): ArtifactBlobs {
  const { dataDir, log } = o;
  const pathOf = (kind: ArtifactKind, sha256: string) => join(dataDir, fileRelPath(kind, sha256));
  const sizeOf = async (path: string) => {
    const st = await stat(path).catch(() => undefined);
    return st?.isFile() ? st.size : undefined;
  };

  return {
    backend: 'file',

    async put(kind, source, expect = {}) {
      checkExpect({ log, refused: o.refused }, expect);
      if (expect.sha256 !== undefined) {
        const have = await sizeOf(pathOf(kind, expect.sha256));
        if (have !== undefined && (expect.bytes === undefined || expect.bytes === have)) return { sha256: expect.sha256, bytes: have, created: false, relPath: fileRelPath(kind, expect.sha256) };
      }
      const dir = dirname(pathOf(kind, '0'.repeat(64)));
      await mkdir(dir, { recursive: true });
      const tmp = join(dir, `.put.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
      try {
        const hash = createHash('sha256');
        let total = 0;
        const fh = await openFile(tmp, 'w');
        try {
          for await (const piece of piecesOf(source)) {
            total += piece.byteLength;
            if (expect.bytes !== undefined && total > expect.bytes) throw refusePut({ log, refused: o.refused }, 'length_mismatch', `more than the expected ${expect.bytes} bytes`, { kind });
            hash.update(piece);
            await fh.write(piece);
          }
          await fh.sync();
        } finally {
          await fh.close();
        }
        const sha256 = hash.digest('hex');
        checkRead({ log, refused: o.refused }, expect, { sha256, bytes: total });
        const path = pathOf(kind, sha256);
        if ((await sizeOf(path)) === total) {
          await rm(tmp, { force: true });
          return { sha256, bytes: total, created: false, relPath: fileRelPath(kind, sha256) };
        }
        await rename(tmp, path);
        const d = await openFile(dir, 'r');
        // The rename itself must survive a crash; some filesystems refuse fsync on a directory (still atomic there).
        await d.sync().catch(() => {});
        await d.close();
        return { sha256, bytes: total, created: true, relPath: fileRelPath(kind, sha256) };
      } catch (err) {
        await rm(tmp, { force: true });
        throw err;
      }
    },

    async open(kind, sha256) {
      const path = pathOf(kind, sha256);
      const bytes = await sizeOf(path);
      if (bytes === undefined) return undefined;
      return { bytes, read: (start, end) => Readable.toWeb(createReadStream(path, { start, end })) as unknown as ReadableStream<Uint8Array> };
    },

    async readAll(kind, sha256) {
      const bytes = await readFile(pathOf(kind, sha256)).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') throw new ArtifactUnavailableError(`artifact ${sha256} is not stored`);
        throw err;
      });
      const actual = createHash('sha256').update(bytes).digest('hex');
      if (actual !== sha256) throw new ArtifactUnavailableError(`artifact ${fileRelPath(kind, sha256)} is corrupt: sha256 ${actual}`);
      return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    },

    async localPath(kind, sha256) {
      const path = pathOf(kind, sha256);
      if ((await sizeOf(path)) === undefined) throw new ArtifactUnavailableError(`artifact ${sha256} is not stored`);
      return path;
    },
  };
}
