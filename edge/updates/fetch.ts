import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import type { Logger } from '../../shared/log/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { DOWNLOADS_DIR, PartialDownload, type ChunkedArtifact } from './partial.js';
import { downloadFromHttp } from './source-http.js';
import { downloadFromMqtt } from './source-mqtt.js';
import { UpdateError, type HttpCredentials } from './types.js';

/**
 * Gets the bytes of a signed artifact onto disk, verified: the HTTP(S) source first when the
 * manifest names one, else (or when it fails) the retained MQTT chunks. Both feed the same
 * resumable partial file, so progress made by one source is kept when falling back to the other,
 * and across reconnects and restarts.
 */

export interface ArtifactFetcherDeps {
  dataDir: string;
  /** The daemon's MQTT client; without it only the HTTP source is available. */
  mqtt?: MqttClient;
  log?: Logger;
  /** MQTT: give up when no new chunk arrived for this long (default 60 s). */
  mqttIdleTimeoutMs?: number;
  /** HTTP: give up when no byte arrived for this long (default 30 s). */
  httpIdleTimeoutMs?: number;
  fetchImpl?: typeof fetch;
  httpCredentials?: HttpCredentials;
}

export type FetchSource = 'http' | 'mqtt' | 'resumed';

export interface FetchProgress {
  sha256: string;
  source: 'http' | 'mqtt';
  index: number;
  status: 'written' | 'duplicate';
  verified: number;
  total: number;
}

export interface FetchResult {
  /** The verified file (inside the downloads dir); move it into a slot with SlotStore.adopt. */
  path: string;
  sha256: string;
  /** Which source delivered the last chunk (`resumed`: everything was already on disk). */
  source: FetchSource;
  /** Chunks found verified on disk at the start (from an earlier attempt). */
  resumedChunks: number;
  /** Chunks written by this call. */
  writtenChunks: number;
  /** Redelivered chunks skipped because they were already verified. */
  duplicates: number;
  /** Why the HTTP source was abandoned, when it was. */
  httpError?: string;
}

export interface FetchOptions {
  signal?: AbortSignal;
  onProgress?: (p: FetchProgress) => void;
}

const INTEGRITY: ReadonlySet<string> = new Set(['hash_mismatch', 'length_mismatch']);

export class ArtifactFetcher {
  private readonly log: Logger;
  private readonly busy = new Set<string>();

  private constructor(private readonly deps: ArtifactFetcherDeps) {
    this.log = deps.log ?? silentLogger;
  }

  static async create(deps: ArtifactFetcherDeps): Promise<ArtifactFetcher> {
    return new ArtifactFetcher(deps);
  }

  get downloadsDir(): string {
    return join(this.deps.dataDir, DOWNLOADS_DIR);
  }

  /**
   * Downloads and verifies `artifact`. Throws UpdateError (`hash_mismatch`, `length_mismatch`,
   * `download_failed`) or the signal's abort reason. Partial progress is kept on failure.
   */
  async fetch(artifact: ChunkedArtifact, { signal, onProgress }: FetchOptions = {}): Promise<FetchResult> {
    if (this.busy.has(artifact.sha256)) throw new UpdateError('download_failed', `artifact ${artifact.sha256} is already being downloaded`);
    this.busy.add(artifact.sha256);
    const partial = await PartialDownload.open({ dataDir: this.deps.dataDir, artifact, log: this.log }).catch((err: unknown) => {
      this.busy.delete(artifact.sha256);
      throw err;
    });
    const result: FetchResult = { path: partial.partPath, sha256: artifact.sha256, source: 'resumed', resumedChunks: partial.resumed, writtenChunks: 0, duplicates: 0 };
    const progress = (source: 'http' | 'mqtt') => (index: number, status: 'written' | 'duplicate') => {
      if (status === 'written') {
        result.writtenChunks++;
        result.source = source;
      } else {
        result.duplicates++;
      }
      onProgress?.({ sha256: artifact.sha256, source, index, status, verified: partial.verified, total: partial.total });
    };
    let finished = false;
    try {
      const errors: Array<{ source: string; err: unknown }> = [];
      if (!partial.complete && artifact.url) {
        try {
          await downloadFromHttp({ url: artifact.url, partial, idleTimeoutMs: this.deps.httpIdleTimeoutMs ?? 30_000, signal, log: this.log, fetchImpl: this.deps.fetchImpl, credentials: this.deps.httpCredentials, onChunk: progress('http') });
        } catch (err) {
          if (signal?.aborted) throw err;
          errors.push({ source: 'http', err });
          result.httpError = (err as Error).message;
          this.log.warn({ sha256: artifact.sha256, err: result.httpError, fallback: this.deps.mqtt ? 'mqtt' : 'none' }, 'updates/http-source-failed');
        }
      }
      if (!partial.complete && this.deps.mqtt) {
        try {
          await downloadFromMqtt({ client: this.deps.mqtt, partial, idleTimeoutMs: this.deps.mqttIdleTimeoutMs ?? 60_000, signal, log: this.log, onChunk: progress('mqtt') });
        } catch (err) {
          if (signal?.aborted) throw err;
          errors.push({ source: 'mqtt', err });
        }
      }
      if (!partial.complete) throw combine(errors, partial);
      const path = await partial.finish();
      finished = true;
      this.log.info({ sha256: artifact.sha256, source: result.source, resumed: result.resumedChunks, written: result.writtenChunks }, 'updates/downloaded');
      return { ...result, path };
    } finally {
      if (!finished) await partial.close().catch((err: unknown) => this.log.warn({ err }, 'updates/partial-close-failed'));
      this.busy.delete(artifact.sha256);
    }
  }

  /** Removes the download leftovers of `sha256` (after the file was moved into a slot). */
  async forget(sha256: string): Promise<void> {
    await rm(join(this.downloadsDir, `${sha256}.part`), { force: true });
    await rm(join(this.downloadsDir, `${sha256}.progress.json`), { force: true });
  }

  /** Removes every partial download except those of `keep` (superseded releases). */
  async prune(keep: Iterable<string> = []): Promise<void> {
    const wanted = new Set(keep);
    let names: string[];
    try {
      names = await readdir(this.downloadsDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    for (const name of names) {
      const sha = name.slice(0, 64);
      if (this.busy.has(sha) || wanted.has(sha)) continue;
      await rm(join(this.downloadsDir, name), { force: true });
    }
  }

  async dispose(): Promise<void> {}
}

/** One error for the caller: an integrity failure from any source outranks a plain unavailability. */
function combine(errors: Array<{ source: string; err: unknown }>, partial: PartialDownload): UpdateError {
  const progress = `${partial.verified}/${partial.total} chunks verified`;
  if (errors.length === 0) return new UpdateError('download_failed', `no source available for the artifact (${progress})`);
  const detail = errors.map(({ source, err }) => `${source}: ${(err as Error)?.message ?? String(err)}`).join('; ');
  const integrity = errors.find(({ err }) => err instanceof UpdateError && INTEGRITY.has(err.reason));
  const reason = integrity ? (integrity.err as UpdateError).reason : 'download_failed';
  return new UpdateError(reason, `${detail} (${progress})`, { cause: errors[errors.length - 1]?.err });
}
