import type { Logger } from '../../shared/log/index.js';
import type { PartialDownload } from './partial.js';
import { UpdateError } from './types.js';

/**
 * Downloads an artifact from the HTTP(S) source named in the signed manifest, resuming with a
 * Range request after the chunks already verified. The body is cut into the manifest's chunks and
 * each is checked before it is written, so the same checks apply as for MQTT; more bytes than the
 * signed length abort the transfer before they are hashed or stored.
 */

export interface HttpSourceOptions {
  url: string;
  partial: PartialDownload;
  /** Abort when no byte arrived for this long. */
  idleTimeoutMs: number;
  signal?: AbortSignal;
  log: Logger;
  fetchImpl?: typeof fetch;
  /** HTTP Basic credentials (the device's MQTT username and password); sent only over https or to loopback. */
  credentials?: { username: string; password: string };
  onChunk?: (index: number, status: 'written' | 'duplicate') => void;
}

export interface HttpSourceStats {
  status: number;
  /** Byte offset the transfer started at (0 when the server ignored the Range header). */
  offset: number;
  received: number;
  written: number;
}

const CONTENT_RANGE_RE = /^bytes (\d+)-(\d+)\/(\d+|\*)$/;

export async function downloadFromHttp(opts: HttpSourceOptions): Promise<HttpSourceStats> {
  const { url, partial, idleTimeoutMs, signal, log, onChunk } = opts;
  const a = partial.artifact;
  const stats: HttpSourceStats = { status: 0, offset: 0, received: 0, written: 0 };
  if (partial.complete) return stats;
  signal?.throwIfAborted();

  const local = new AbortController();
  const onAbort = (): void => local.abort(signal?.reason);
  signal?.addEventListener('abort', onAbort, { once: true });
  let idle: NodeJS.Timeout | undefined;
  const armIdle = (): void => {
    clearTimeout(idle);
    idle = setTimeout(() => local.abort(new UpdateError('download_failed', `HTTP source idle for ${idleTimeoutMs} ms`)), idleTimeoutMs);
  };

  const start = partial.contiguousChunks() * a.chunkSize;
  // identity: a compressed body would make byte offsets and the length cap meaningless.
  const headers: Record<string, string> = { 'accept-encoding': 'identity' };
  if (start > 0) headers.range = `bytes=${start}-`;
  if (opts.credentials && mayCarryCredentials(url)) headers.authorization = `Basic ${Buffer.from(`${opts.credentials.username}:${opts.credentials.password}`).toString('base64')}`;

  try {
    armIdle();
    let res: Response;
    try {
      res = await (opts.fetchImpl ?? fetch)(url, { headers, signal: local.signal, redirect: 'follow' });
    } catch (err) {
      throw asFailure(err, local.signal, `HTTP request to ${url} failed`);
    }
    stats.status = res.status;
    let offset: number;
    if (res.status === 206) {
      const m = CONTENT_RANGE_RE.exec(res.headers.get('content-range') ?? '');
      if (!m || Number(m[1]) !== start) throw new UpdateError('download_failed', `unexpected Content-Range "${res.headers.get('content-range')}" for a request from byte ${start}`);
      if (m[3] !== '*' && Number(m[3]) !== a.bytes) throw new UpdateError('length_mismatch', `server reports ${m[3]} bytes, the manifest says ${a.bytes}`);
      offset = start;
    } else if (res.status === 200) {
      offset = 0; // the server ignored Range: take it from the top, stored chunks are skipped.
    } else {
      throw new UpdateError('download_failed', `HTTP ${res.status} from ${url}`);
    }
    stats.offset = offset;
    const declared = res.headers.get('content-length');
    if (declared !== null && Number(declared) !== a.bytes - offset) {
      throw new UpdateError('length_mismatch', `Content-Length ${declared} from byte ${offset}, the manifest says ${a.bytes - offset}`);
    }
    if (!res.body) throw new UpdateError('download_failed', 'HTTP response has no body');

    let pos = offset;
    let index = Math.floor(offset / a.chunkSize);
    let pieces: Buffer[] = [];
    let pieceBytes = 0;
    const reader = res.body.getReader();
    try {
      for (;;) {
        let r: Awaited<ReturnType<typeof reader.read>>;
        try {
          r = await reader.read();
        } catch (err) {
          throw asFailure(err, local.signal, `HTTP body from ${url} broke off at byte ${pos}`);
        }
        if (r.done) break;
        armIdle();
        const piece = r.value;
        // The cap comes before any hashing or writing: bytes past the signed length are never used.
        if (pos + piece.byteLength > a.bytes) {
          local.abort(new UpdateError('length_mismatch', 'too many bytes'));
          throw new UpdateError('length_mismatch', `HTTP source sent more than the signed ${a.bytes} bytes`);
        }
        pos += piece.byteLength;
        stats.received += piece.byteLength;
        pieces.push(Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength));
        pieceBytes += piece.byteLength;
        // Emit every complete chunk held in the buffer.
        for (;;) {
          const want = Math.min(a.chunkSize, a.bytes - index * a.chunkSize);
          if (want <= 0 || pieceBytes < want) break;
          const all = pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces, pieceBytes);
          const status = await partial.accept(index, all.subarray(0, want));
          if (status === 'written') stats.written++;
          onChunk?.(index, status);
          const rest = all.subarray(want);
          pieces = rest.length ? [rest] : [];
          pieceBytes = rest.length;
          index++;
        }
      }
    } finally {
      reader.releaseLock();
    }
    if (pos < a.bytes) throw new UpdateError('download_failed', `HTTP body ended at byte ${pos} of ${a.bytes}`);
    log.debug({ sha256: a.sha256, ...stats }, 'updates/http-done');
    return stats;
  } finally {
    clearTimeout(idle);
    signal?.removeEventListener('abort', onAbort);
    if (!local.signal.aborted) local.abort(new Error('done'));
  }
}

/** Maps a fetch/stream failure to the caller's abort reason or a `download_failed` UpdateError. */
function asFailure(err: unknown, signal: AbortSignal, what: string): unknown {
  if (signal.aborted) {
    const reason: unknown = signal.reason;
    return reason instanceof Error ? reason : new UpdateError('download_failed', `${what}: aborted`);
  }
  if (err instanceof UpdateError) return err;
  return new UpdateError('download_failed', `${what}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}

/** Credentials go only where they cannot be read on the way: https, or a loopback host. */
export function mayCarryCredentials(url: string): boolean {
  try {
    const u = new URL(url);
    return u.protocol === 'https:' || (u.protocol === 'http:' && (u.hostname === 'localhost' || u.hostname === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(u.hostname)));
  } catch {
    return false;
  }
}
