import type { Context } from 'hono';
import { ApiError } from './errors.js';
import { parseRange } from './range.js';

/**
 * Answers a GET/HEAD for immutable, content-addressed bytes: ETag (the sha256), If-None-Match,
 * If-Range, a single Range (206, or 416 with `Content-Range: bytes *\/SIZE`).
 */
export function serveBytes(
  c: Context,
  { sha256, size, name, read }: { sha256: string; size: number; name: string; read: (start: number, end: number) => ReadableStream<Uint8Array> },
): Response {
  const etag = `"${sha256}"`;
  c.header('ETag', etag);
  c.header('Accept-Ranges', 'bytes');
  // Content-addressed: the bytes behind this ETag never change.
  c.header('Cache-Control', 'private, max-age=31536000, immutable');
  const inm = c.req.header('if-none-match');
  if (inm !== undefined && inm.split(',').some((t) => t.trim() === etag || t.trim() === `W/${etag}` || t.trim() === '*')) return c.body(null, 304);

  const ifRange = c.req.header('if-range');
  const range = ifRange !== undefined && ifRange.trim() !== etag ? { kind: 'full' as const } : parseRange(c.req.header('range'), size);
  if (range.kind === 'unsatisfiable') {
    throw new ApiError(416, 'range_not_satisfiable', `range ${JSON.stringify(c.req.header('range'))} cannot be served from ${size} bytes`, 'range', { 'Content-Range': `bytes */${size}` });
  }
  const [start, end] = range.kind === 'partial' ? [range.start, range.end] : [0, size - 1];
  c.header('Content-Type', 'application/octet-stream');
  c.header('Content-Disposition', `attachment; filename="${name}"`);
  c.header('Content-Length', String(end - start + 1));
  if (range.kind === 'partial') c.header('Content-Range', `bytes ${start}-${end}/${size}`);
  const status = range.kind === 'partial' ? 206 : 200;
  if (c.req.method === 'HEAD' || size === 0) return c.body(null, status);
  return c.body(read(start, end), status);
}
