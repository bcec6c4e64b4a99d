import type { IncomingMessage } from 'node:http';
import type { Context, MiddlewareHandler } from 'hono';
import { ApiError } from './errors.js';

/**
 * A request header. Under @hono/node-server it is read from Node's own parsed headers: `c.req.header()`
 * makes the adapter build a WHATWG Headers object from the raw headers first, ~5 µs per request on the
 * edge's predict hot path. Elsewhere (app.request() in tests, other runtimes) it falls back to `c.req.header()`.
 *
 * @example
 * const length = header(c, 'content-length');
 */
export function header(c: Context, name: string): string | undefined {
  const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
  if (incoming?.headers) {
    const v = incoming.headers[name];
    return Array.isArray(v) ? v.join(', ') : v;
  }
  return c.req.header(name);
}

/**
 * The media type of a Content-Type value, without parameters, lower-cased; '' without one.
 *
 * @example
 * mediaType('Application/JSON; charset=utf-8'); // 'application/json'
 */
export function mediaType(contentType: string | undefined): string {
  if (contentType === undefined) return '';
  const semi = contentType.indexOf(';');
  return (semi === -1 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
}

/**
 * 415 for a body that is not JSON, quoting (the start of) the Content-Type it came with.
 *
 * @example
 * if (mediaType(ct) !== 'application/json') throw notJson(ct);
 */
export function notJson(contentType: string | undefined): ApiError {
  const got = contentType === undefined ? 'none' : JSON.stringify(contentType.slice(0, 100));
  return new ApiError(415, 'unsupported_media_type', `expected Content-Type application/json, got ${got}`);
}

function tooLarge(maxBytes: number): ApiError {
  return new ApiError(413, 'payload_too_large', `request body exceeds ${maxBytes} bytes`);
}

export interface LimitBodyOptions {
  /** Largest body accepted; 1 MiB by default. */
  maxBytes?: number;
  /**
   * Content-Length must be digits only (RFC 9110 §8.6). Off, any value that reads as a non-negative
   * integer passes. Node's HTTP parser already refuses malformed lengths on a real socket, so this only
   * shows for requests that do not come through it (app.request()).
   */
  strictLength?: boolean;
}

/**
 * Caps the request body at `maxBytes` (413; 400 for an invalid Content-Length). A request with a
 * Content-Length is judged on the header alone (Node's HTTP parser never delivers more bytes than it
 * declares). On a socket, a request with neither Content-Length nor Transfer-Encoding has no body (RFC 9112
 * §6.3: a DELETE from curl or fetch) and passes as is. Chunked bodies, and length-less ones that do not come
 * through Node's parser (app.request()), are read here, counted while they arrive (413 past the limit), and
 * handed on as a buffered request. The split keeps the hot path off `c.req.raw.body`: touching it makes
 * @hono/node-server build a full WHATWG Request and stream per call.
 *
 * (Not hono's `bodyLimit`: it re-wraps `c.req.raw` with `new Request(c.req.raw, …)`, which throws on
 * @hono/node-server's request object, so every chunked or length-less request answered 500.)
 *
 * @example
 * app.post('/v1/predict', limitBody({ maxBytes: 1 << 20 }), handler);
 */
export function limitBody({ maxBytes = 1 << 20, strictLength = false }: LimitBodyOptions = {}): MiddlewareHandler {
  return async function limitBody(c, next) {
    const length = header(c, 'content-length');
    const chunked = header(c, 'transfer-encoding') !== undefined;
    if (length !== undefined && !chunked) {
      const n = Number(length);
      if (!Number.isSafeInteger(n) || n < 0 || (strictLength && !/^\d+$/.test(length))) throw new ApiError(400, 'invalid_request', 'invalid Content-Length');
      if (n > maxBytes) throw tooLarge(maxBytes);
      return next();
    }
    const onSocket = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming !== undefined;
    if (onSocket && !chunked) return next();
    await readCapped(c, maxBytes);
    return next();
  };
}

/** Reads the body, 413 once past `maxBytes`, and replaces the request with one holding the bytes read. */
async function readCapped(c: Context, maxBytes: number): Promise<void> {
  const raw = c.req.raw;
  if (!raw.body) return;
  const reader = raw.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      void reader.cancel().catch(() => undefined);
      throw tooLarge(maxBytes);
    }
    chunks.push(value);
  }
  const headers = new Headers(raw.headers);
  headers.delete('transfer-encoding');
  headers.set('content-length', String(size));
  c.req.raw = new Request(raw.url, { method: raw.method, headers, body: size ? Buffer.concat(chunks) : null, signal: raw.signal });
}

/**
 * Accepts only `application/json` bodies (any parameters, e.g. charset); anything else is 415.
 *
 * @example
 * app.post('/v1/feedback', jsonOnly(), handler);
 */
export function jsonOnly(): MiddlewareHandler {
  return function jsonOnly(c, next) {
    const ct = header(c, 'content-type');
    if (mediaType(ct) !== 'application/json') throw notJson(ct);
    return next();
  };
}
