import { createHash } from 'node:crypto';
import { mkdir, open, readFile, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import type { Logger } from '../../shared/log/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { expectedChunkLength, type ArtifactDescriptor } from '../../shared/manifest/index.js';
import { checkFile, writeFileAtomic } from './fsutil.js';
import { UpdateError } from './types.js';

/**
 * A resumable download: `DATA/downloads/{sha}.part` holds chunks at their offsets, and
 * `{sha}.progress.json` lists the chunks known to be verified and durable. Every chunk is checked
 * (index in range, exact length, then sha256 against the signed manifest) before it touches disk,
 * so the partial file never holds unsigned bytes. Chunks listed in the record are re-hashed on open,
 * so a torn write or a stale record costs a re-download, never a bad model.
 */

export const DOWNLOADS_DIR = 'downloads';

/** What a download needs of a signed artifact: a model's (`onnx`) or an agent bundle's (`tar.gz`, issue 14). */
export type ChunkedArtifact = Pick<ArtifactDescriptor, 'sha256' | 'bytes' | 'chunkSize' | 'chunks' | 'url'>;

const progressSchema = z.strictObject({
  v: z.literal(1),
  sha256: z.string(),
  bytes: z.number().int(),
  chunkSize: z.number().int(),
  /** Binds the record to one chunk list; a different chunking of the same bytes starts over. */
  chunksDigest: z.string(),
  have: z.array(z.number().int().min(0)),
});

export type ChunkStatus = 'written' | 'duplicate';

export interface PartialDownloadDeps {
  dataDir: string;
  artifact: ChunkedArtifact;
  log?: Logger;
}

function chunksDigest(artifact: ChunkedArtifact): string {
  return createHash('sha256').update(artifact.chunks.join(',')).digest('hex');
}

export class PartialDownload {
  readonly partPath: string;
  readonly progressPath: string;
  /** Chunks recovered from a previous attempt when opened. */
  resumed = 0;
  private readonly have = new Set<number>();
  private readonly pending = new Set<number>();
  private readonly writes = new Set<Promise<unknown>>();
  private fh: FileHandle | undefined;
  private dirty = false;
  private flushing: Promise<void> | undefined;
  private readonly log: Logger;

  private constructor(private readonly deps: PartialDownloadDeps) {
    const dir = join(deps.dataDir, DOWNLOADS_DIR);
    this.partPath = join(dir, `${deps.artifact.sha256}.part`);
    this.progressPath = join(dir, `${deps.artifact.sha256}.progress.json`);
    this.log = deps.log ?? silentLogger;
  }

  static async open(deps: PartialDownloadDeps): Promise<PartialDownload> {
    const p = new PartialDownload(deps);
    await mkdir(join(deps.dataDir, DOWNLOADS_DIR), { recursive: true });
    await p.recover();
    return p;
  }

  get artifact(): ChunkedArtifact {
    return this.deps.artifact;
  }
  get total(): number {
    return this.deps.artifact.chunks.length;
  }
  get verified(): number {
    return this.have.size;
  }
  get complete(): boolean {
    return this.have.size === this.total;
  }
  has(index: number): boolean {
    return this.have.has(index);
  }
  /** Number of leading chunks already verified: where a sequential (HTTP Range) download resumes. */
  contiguousChunks(): number {
    let n = 0;
    while (this.have.has(n)) n++;
    return n;
  }

  /**
   * Checks and stores one chunk. Order: index in range, exact length (before hashing anything),
   * then sha256. Throws UpdateError `length_mismatch` / `hash_mismatch`; returns `duplicate` for a
   * chunk already stored (retained chunks are redelivered on every resubscribe).
   */
  async accept(index: number, data: Uint8Array): Promise<ChunkStatus> {
    const a = this.deps.artifact;
    if (!Number.isSafeInteger(index) || index < 0 || index >= this.total) {
      throw new UpdateError('length_mismatch', `chunk ${index} is beyond the signed ${this.total} chunks (${a.bytes} bytes)`);
    }
    if (this.have.has(index) || this.pending.has(index)) return 'duplicate';
    const want = expectedChunkLength(a, index);
    if (data.byteLength !== want) throw new UpdateError('length_mismatch', `chunk ${index} has ${data.byteLength} bytes, the manifest says ${want}`);
    const sha = createHash('sha256').update(data).digest('hex');
    if (sha !== a.chunks[index]) throw new UpdateError('hash_mismatch', `chunk ${index} sha256 ${sha.slice(0, 12)}… does not match the manifest`);
    if (!this.fh) throw new UpdateError('download_failed', 'partial download is closed');
    this.pending.add(index);
    const write = this.fh.write(data, 0, data.byteLength, index * a.chunkSize);
    this.writes.add(write);
    try {
      await write;
    } finally {
      this.pending.delete(index);
      this.writes.delete(write);
    }
    this.have.add(index);
    this.scheduleFlush();
    return 'written';
  }

  /** Waits for chunk writes in flight, then until the progress record reflects every stored chunk. */
  async flush(): Promise<void> {
    while (this.writes.size) await Promise.allSettled([...this.writes]);
    while (this.flushing) await this.flushing;
  }

  /**
   * Verifies the whole file (length first, then sha256) once every chunk is in, and returns its
   * path. A mismatch (chunk hashes that disagree with the file hash) discards everything.
   */
  async finish(): Promise<string> {
    if (!this.complete) throw new UpdateError('download_failed', `download incomplete: ${this.have.size}/${this.total} chunks`);
    await this.flush();
    await this.closeFile(true);
    const r = await checkFile(this.partPath, this.deps.artifact);
    if (r !== 'ok') {
      await this.discard();
      throw new UpdateError(r === 'missing' ? 'download_failed' : r, `assembled file failed verification (${r})`);
    }
    return this.partPath;
  }

  /** Stops writing; the files stay for a later resume. */
  async close(): Promise<void> {
    await this.flush();
    await this.closeFile(false);
  }

  /** Deletes the partial file and its record. */
  async discard(): Promise<void> {
    await this.flush().catch(() => undefined);
    await this.closeFile(false).catch(() => undefined);
    await rm(this.partPath, { force: true });
    await rm(this.progressPath, { force: true });
    this.have.clear();
  }

  private async closeFile(sync: boolean): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    if (!fh) return;
    try {
      if (sync) await fh.sync();
    } finally {
      await fh.close();
    }
  }

  private scheduleFlush(): void {
    this.dirty = true;
    if (this.flushing) return;
    this.flushing = (async () => {
      try {
        while (this.dirty && this.fh) {
          this.dirty = false;
          const have = [...this.have].sort((x, y) => x - y);
          // Data first, then the record that claims it: the record never lists bytes a crash could lose.
          await this.fh.datasync();
          await writeFileAtomic(this.progressPath, JSON.stringify(this.record(have)));
        }
      } catch (err) {
        // The record is an optimisation: without it a restart re-fetches, nothing worse.
        this.log.warn({ err, sha256: this.deps.artifact.sha256 }, 'updates/progress-write-failed');
      } finally {
        this.flushing = undefined;
      }
    })();
  }

  private record(have: number[]): z.infer<typeof progressSchema> {
    const a = this.deps.artifact;
    return { v: 1, sha256: a.sha256, bytes: a.bytes, chunkSize: a.chunkSize, chunksDigest: chunksDigest(a), have };
  }

  private async recover(): Promise<void> {
    const a = this.deps.artifact;
    let claimed: number[] = [];
    try {
      const r = progressSchema.safeParse(JSON.parse(await readFile(this.progressPath, 'utf8')));
      if (r.success && r.data.sha256 === a.sha256 && r.data.bytes === a.bytes && r.data.chunkSize === a.chunkSize && r.data.chunksDigest === chunksDigest(a)) {
        claimed = r.data.have.filter((i) => i < this.total);
      }
    } catch {
      // No record or an unreadable one: start over.
    }
    let fh: FileHandle;
    try {
      // Without a matching record the old bytes are unaccounted for: truncate ('w+').
      fh = await open(this.partPath, claimed.length ? 'r+' : 'w+');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      claimed = [];
      fh = await open(this.partPath, 'w+');
    }
    this.fh = fh;
    if ((await fh.stat()).size > a.bytes) await fh.truncate(a.bytes);
    for (const i of claimed) {
      const want = expectedChunkLength(a, i);
      const buf = Buffer.alloc(want);
      const { bytesRead } = await fh.read(buf, 0, want, i * a.chunkSize);
      if (bytesRead === want && createHash('sha256').update(buf).digest('hex') === a.chunks[i]) this.have.add(i);
    }
    this.resumed = this.have.size;
    if (claimed.length && this.resumed < claimed.length) {
      this.log.warn({ sha256: a.sha256, claimed: claimed.length, kept: this.resumed }, 'updates/partial-chunks-dropped');
    }
  }
}
