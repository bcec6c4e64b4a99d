import { createReadStream } from 'node:fs';
import type { ArtifactSource } from './types.js';

/** The registry store's chunk size: big enough that a 30 MB model is 30 rows, small enough to hold one in memory. */
export const REGISTRY_CHUNK_BYTES = 1024 * 1024;

/** The pieces of a source as they come (a file is read 256 KiB at a time). */
export async function* piecesOf(source: ArtifactSource): AsyncGenerator<Uint8Array> {
  if (source instanceof Uint8Array) yield source;
  else if ('path' in source) yield* createReadStream(source.path, { highWaterMark: 256 * 1024 }) as AsyncIterable<Buffer>;
  else yield* source;
}

/**
 * Regroups pieces into chunks of exactly `size` bytes (the last one shorter, none for an empty source). Each
 * chunk is a fresh Buffer the consumer may keep; only the chunk being filled is held here.
 */
export async function* fixedChunks(pieces: AsyncIterable<Uint8Array>, size: number): AsyncGenerator<Buffer> {
  let buf = Buffer.allocUnsafe(size);
  let fill = 0;
  for await (const piece of pieces) {
    for (let off = 0; off < piece.byteLength; ) {
      const n = Math.min(size - fill, piece.byteLength - off);
      buf.set(piece.subarray(off, off + n), fill);
      fill += n;
      off += n;
      if (fill === size) {
        yield buf;
        buf = Buffer.allocUnsafe(size);
        fill = 0;
      }
    }
  }
  if (fill > 0) yield buf.subarray(0, fill);
}
