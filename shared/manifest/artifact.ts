import { createHash } from 'node:crypto';
import type { z } from 'zod';
import { formatIssues } from '../protocol/codec.js';
import { artifactSchema } from '../protocol/schemas.js';
import { ManifestError } from './sign.js';

export type ArtifactDescriptor = z.infer<typeof artifactSchema>;

/** Default chunk size: 128 KiB keeps every retained chunk under AWS IoT Core's message limit. */
export const DEFAULT_CHUNK_SIZE = 128 * 1024;

export function sha256Of(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Splits `bytes` into `chunkSize` pieces (the last may be shorter). Views, not copies. */
export function chunkArtifact(bytes: Uint8Array, chunkSize: number = DEFAULT_CHUNK_SIZE): Buffer[] {
  if (!Number.isSafeInteger(chunkSize) || chunkSize < 1) throw new ManifestError(`invalid chunk size ${chunkSize}`);
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: Buffer[] = [];
  for (let off = 0; off < buf.length; off += chunkSize) out.push(buf.subarray(off, Math.min(off + chunkSize, buf.length)));
  return out;
}

/** Length a chunk must have: `chunkSize`, except the last one which holds the remainder. */
export function expectedChunkLength(artifact: Pick<ArtifactDescriptor, 'bytes' | 'chunkSize'>, index: number): number {
  const start = index * artifact.chunkSize;
  return Math.max(0, Math.min(artifact.chunkSize, artifact.bytes - start));
}

export interface ArtifactOptions {
  chunkSize?: number;
  quantization: ArtifactDescriptor['quantization'];
  url?: string;
}

/**
 * The manifest's `artifact` object for some model bytes: whole-file sha256 and length, and the
 * sha256 of every chunk so a device can check each retained chunk on arrival. The cloud publisher
 * and the device both use this file, so chunk boundaries cannot disagree.
 *
 * @example
 * const artifact = buildArtifactDescriptor(onnxBytes, { quantization: 'int8' });
 * chunkArtifact(onnxBytes, artifact.chunkSize).forEach((c, i) => publish(topics.artifactChunk(artifact.sha256, i), c));
 */
export function buildArtifactDescriptor(bytes: Uint8Array, { chunkSize = DEFAULT_CHUNK_SIZE, quantization, url }: ArtifactOptions): ArtifactDescriptor {
  const chunks = chunkArtifact(bytes, chunkSize).map(sha256Of);
  const r = artifactSchema.safeParse({
    format: 'onnx',
    quantization,
    sha256: sha256Of(bytes),
    bytes: bytes.byteLength,
    chunkSize,
    chunks,
    ...(url !== undefined ? { url } : {}),
  });
  if (!r.success) throw new ManifestError(`invalid artifact: ${formatIssues(r.error)}`);
  return r.data;
}
