/**
 * Where artifacts live (issue 10 item 8, issue 15 items 2 and 3): content-addressed by sha256, on the data
 * dir's disk (SQLite, one process) or in the registry database every replica reaches (PostgreSQL).
 *
 * Two faces:
 * - `ArtifactBlobs`: bytes by kind and sha256, for the cloud's own writers and readers (rounds, uploads,
 *   agent pushes, teacher files, datasets);
 * - `ArtifactStore`: what `GET /v1/artifacts/{sha256}` serves to devices (release artifacts only, with a
 *   download name).
 */

/** What an artifact is; it only decides the file name on the file store (the registry store has one namespace). */
export type ArtifactKind = 'model' | 'agent' | 'teacher' | 'dataset';

/** Bytes to store: in memory, a file, or a stream (a Node Readable is an AsyncIterable). */
export type ArtifactSource = Uint8Array | { path: string } | AsyncIterable<Uint8Array>;

/** What the caller says the bytes are; `put` refuses content that disagrees and stores nothing. */
export interface ArtifactExpect {
  sha256?: string;
  bytes?: number;
}

export interface PutResult {
  sha256: string;
  bytes: number;
  /** False when the same content was already stored (put is idempotent). */
  created: boolean;
  /**
   * The path under the data dir where the file store keeps it (e.g. `artifacts/{sha}.onnx`), for
   * `releases.artifact_path`. Read the bytes back by sha256 through the store, never through this path:
   * on the registry store no such file exists.
   */
  relPath: string;
}

/** A stored blob, opened: its size and its bytes start..end (inclusive), streamed. */
export interface OpenedBlob {
  bytes: number;
  read(start: number, end: number): ReadableStream<Uint8Array>;
}

export interface ArtifactBlobs {
  readonly backend: 'file' | 'registry';
  /**
   * Streams `source` in (one chunk in memory at a time), checks it against `expect`, and stores it atomically:
   * a reader sees the whole blob or none. Throws ArtifactRejectedError (nothing stored) when it disagrees.
   */
  put(kind: ArtifactKind, source: ArtifactSource, expect?: ArtifactExpect): Promise<PutResult>;
  /** The blob, or undefined when none is stored under that sha256. */
  open(kind: ArtifactKind, sha256: string): Promise<OpenedBlob | undefined>;
  /** The whole blob, checked against its sha256; throws ArtifactUnavailableError when missing or corrupt. */
  readAll(kind: ArtifactKind, sha256: string): Promise<Uint8Array>;
  /**
   * A local file with the blob's bytes, for code that needs a path (onnxruntime teacher files, dataset
   * loaders): the file itself on the file store, a verified copy under the cache dir on the registry store.
   */
  localPath(kind: ArtifactKind, sha256: string): Promise<string>;
}

/** One stored artifact, found by its sha256. */
export interface StoredArtifact {
  size: number;
  /** A download name, e.g. `digits-3.onnx`. */
  name: string;
  /** Bytes start..end (inclusive). */
  read(start: number, end: number): ReadableStream<Uint8Array>;
}

/** What `GET /v1/artifacts/{sha256}` serves: the artifacts of model and agent releases. */
export interface ArtifactStore {
  /** The artifact whose sha256 is `sha256` (64 lowercase hex), or undefined when none is stored. */
  get(sha256: string): Promise<StoredArtifact | undefined>;
}

/** Stored bytes that cannot be served: outside the store, the wrong size, a chunk missing, a bad hash. */
export class ArtifactUnavailableError extends Error {
  override readonly name = 'ArtifactUnavailableError';
}

export type PutRefusal = 'bad_sha256' | 'sha256_mismatch' | 'length_mismatch';

/** A put whose content disagrees with what the caller said; nothing was stored. */
export class ArtifactRejectedError extends Error {
  override readonly name = 'ArtifactRejectedError';
  constructor(
    readonly reason: PutRefusal,
    message: string,
  ) {
    super(message);
  }
}

export const SHA256_HEX = /^[0-9a-f]{64}$/;
