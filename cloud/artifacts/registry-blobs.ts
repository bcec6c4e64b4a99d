import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open as openFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { and, eq, lt, notInArray, sql } from 'drizzle-orm';
import type { Logger } from '../../shared/log/index.js';
import type { StoreRegistry } from '../registry/open.js';
import { q } from '../registry/tx.js';
import { fixedChunks, piecesOf, REGISTRY_CHUNK_BYTES } from './chunks.js';
import { fileRelPath } from './file-blobs.js';
import { checkExpect, checkRead, refusePut } from './refusal.js';
import { ArtifactUnavailableError, type ArtifactBlobs, type OpenedBlob, type PutRefusal } from './types.js';

export interface RegistryBlobsOptions {
  registry: StoreRegistry;
  /** Where `localPath` keeps verified copies (this replica's own cache; losing it costs a re-read). */
  cacheDir: string;
  log: Logger;
  /** Counts a refused put (`apprentice_artifact_put_refused_total{reason}`). */
  refused?: (reason: PutRefusal) => void;
  chunkBytes?: number;
}

/**
 * Artifacts in the registry database (issue 15 item 3), so every replica serves them: `artifact_blobs` names a
 * blob's size and chunk set, `artifact_chunks` holds its bytes in `chunkBytes` rows (1 MiB).
 *
 * A put writes its chunks under a fresh chunk set, one statement per chunk (one chunk in memory), then checks
 * length and sha256 and inserts the blob row in one transaction. A reader goes through the blob row, so it never
 * sees a partial blob. Two puts of the same content both stage; the second one's blob insert finds the row
 * and drops its own set. A refused or failed put deletes its set; a crashed one leaves a set no row names,
 * which `sweepOrphans` removes.
 */
export function registryBlobs(o: RegistryBlobsOptions): ArtifactBlobs & { sweepOrphans(olderThan: Date): Promise<number> } {
  const { registry: reg, log } = o;
  const t = reg.t;
  const chunkBytes = o.chunkBytes ?? REGISTRY_CHUNK_BYTES;

  const blobRow = async (sha256: string) => {
    const [row] = await reg.q.select({ bytes: t.artifactBlobs.bytes, chunkSize: t.artifactBlobs.chunkSize, chunkSet: t.artifactBlobs.chunkSet }).from(t.artifactBlobs).where(eq(t.artifactBlobs.sha256, sha256));
    return row;
  };

  const openBlob = async (sha256: string): Promise<OpenedBlob | undefined> => {
    const row = await blobRow(sha256);
    if (!row) return undefined;
    const { bytes, chunkSize, chunkSet } = row;
    return {
      bytes,
      read(start, end) {
        // Only the chunks covering start..end, fetched one per pull: at most one chunk is buffered ahead.
        let idx = Math.floor(start / chunkSize);
        const last = Math.floor(end / chunkSize);
        return new ReadableStream<Uint8Array>({
          async pull(ctrl) {
            if (idx > last || start > end) return ctrl.close();
            const from = idx * chunkSize;
            const want = Math.min(chunkSize, bytes - from);
            const lo = Math.max(start, from) - from;
            const hi = Math.min(end, from + want - 1) - from + 1;
            // Only the covered bytes leave the database: substr() on a blob/bytea counts bytes on both dialects
            // (1-based), and PostgreSQL reads just the TOAST slices it needs (chunks are stored uncompressed).
            const [chunk] = await reg.q
              .select({ part: sql<Buffer>`substr(${t.artifactChunks.data}, ${sql.raw(String(lo + 1))}, ${sql.raw(String(hi - lo))})`, length: sql<number>`length(${t.artifactChunks.data})` })
              .from(t.artifactChunks)
              .where(and(eq(t.artifactChunks.chunkSet, chunkSet), eq(t.artifactChunks.idx, idx)));
            if (!chunk || Number(chunk.length) !== want || chunk.part.byteLength !== hi - lo) {
              log.error({ sha256, idx, expected: want, actual: chunk?.length }, 'artifacts/registry: chunk missing or the wrong size');
              return ctrl.error(new ArtifactUnavailableError(`artifact ${sha256}: chunk ${idx} is missing or damaged`));
            }
            ctrl.enqueue(new Uint8Array(chunk.part.buffer, chunk.part.byteOffset, chunk.part.byteLength));
            idx++;
          },
        });
      },
    };
  };

  const readAll = async (sha256: string): Promise<Uint8Array> => {
    const blob = await openBlob(sha256);
    if (!blob) throw new ArtifactUnavailableError(`artifact ${sha256} is not stored`);
    const out = new Uint8Array(blob.bytes);
    let at = 0;
    if (blob.bytes > 0) {
      for await (const piece of blob.read(0, blob.bytes - 1)) {
        out.set(piece, at);
        at += piece.byteLength;
      }
    }
    const actual = createHash('sha256').update(out).digest('hex');
    if (actual !== sha256) throw new ArtifactUnavailableError(`artifact ${sha256} is corrupt: its chunks hash to ${actual}`);
    return out;
  };

  return {
    backend: 'registry',

    async put(kind, source, expect = {}) {
      checkExpect({ log, refused: o.refused }, expect);
      if (expect.sha256 !== undefined) {
        const have = await blobRow(expect.sha256);
        if (have) {
          if (expect.bytes !== undefined && expect.bytes !== have.bytes) throw refusePut({ log, refused: o.refused }, 'length_mismatch', `artifact ${expect.sha256} is stored with ${have.bytes} bytes, expected ${expect.bytes}`);
          return { sha256: expect.sha256, bytes: have.bytes, created: false, relPath: fileRelPath(kind, expect.sha256) };
        }
      }
      const chunkSet = randomBytes(12).toString('hex');
      const hash = createHash('sha256');
      let total = 0;
      let idx = 0;
      try {
        for await (const chunk of fixedChunks(piecesOf(source), chunkBytes)) {
          total += chunk.byteLength;
          // Stop reading as soon as the source is longer than promised.
          if (expect.bytes !== undefined && total > expect.bytes) throw refusePut({ log, refused: o.refused }, 'length_mismatch', `more than the expected ${expect.bytes} bytes`, { kind, chunkSet });
          hash.update(chunk);
          await reg.q.insert(t.artifactChunks).values({ chunkSet, idx: idx++, data: chunk });
        }
        const sha256 = hash.digest('hex');
        checkRead({ log, refused: o.refused }, expect, { sha256, bytes: total });
        const created = await reg.tx(function* (tx, tt) {
          const inserted = yield* q(tx.insert(tt.artifactBlobs).values({ sha256, bytes: total, chunkSize: chunkBytes, chunkSet }).onConflictDoNothing().returning({ sha256: tt.artifactBlobs.sha256 }));
          if (inserted.length === 0) yield* q(tx.delete(tt.artifactChunks).where(eq(tt.artifactChunks.chunkSet, chunkSet)));
          return inserted.length > 0;
        });
        log.debug({ kind, sha256, bytes: total, chunks: idx, created }, 'artifacts/registry: put');
        return { sha256, bytes: total, created, relPath: fileRelPath(kind, sha256) };
      } catch (err) {
        await reg.q
          .delete(t.artifactChunks)
          .where(eq(t.artifactChunks.chunkSet, chunkSet))
          .catch((e: unknown) => log.warn({ err: e, chunkSet }, 'artifacts/registry: could not delete the chunks of a failed put (sweepOrphans will)'));
        throw err;
      }
    },

    open: (_kind, sha256) => openBlob(sha256),

    readAll: (_kind, sha256) => readAll(sha256),

    async localPath(_kind, sha256) {
      const path = join(o.cacheDir, sha256);
      const blob = await blobRow(sha256);
      if (!blob) throw new ArtifactUnavailableError(`artifact ${sha256} is not stored`);
      const have = await stat(path).catch(() => undefined);
      if (have?.isFile() && have.size === blob.bytes) return path;
      // A verified copy, renamed into place: a crash leaves no half-written cache file under the final name.
      await mkdir(o.cacheDir, { recursive: true });
      const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
      try {
        const fh = await openFile(tmp, 'w');
        const hash = createHash('sha256');
        try {
          const opened = await openBlob(sha256);
          if (opened && opened.bytes > 0) {
            for await (const piece of opened.read(0, opened.bytes - 1)) {
              hash.update(piece);
              await fh.write(piece);
            }
          }
          await fh.sync();
        } finally {
          await fh.close();
        }
        const actual = hash.digest('hex');
        if (actual !== sha256) throw new ArtifactUnavailableError(`artifact ${sha256} is corrupt: its chunks hash to ${actual}`);
        await rename(tmp, path);
      } catch (err) {
        await rm(tmp, { force: true });
        throw err;
      }
      return path;
    },

    async sweepOrphans(olderThan) {
      const named = reg.q.select({ s: t.artifactBlobs.chunkSet }).from(t.artifactBlobs);
      const gone = await reg.q
        .delete(t.artifactChunks)
        .where(and(lt(t.artifactChunks.createdAt, olderThan.toISOString()), notInArray(t.artifactChunks.chunkSet, named)))
        .returning({ s: t.artifactChunks.chunkSet });
      if (gone.length > 0) log.info({ chunks: gone.length, sets: new Set(gone.map((g) => g.s)).size }, 'artifacts/registry: swept the chunks of unfinished puts');
      return gone.length;
    },
  };
}
