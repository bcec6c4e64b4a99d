import type { IncomingMessage } from 'node:http';
import type { Context, MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { ApiError } from './errors.js';

/**
 * A request header. Under @hono/node-server it is read from Node's own parsed headers: `c.req.header()`
 * makes the adapter build a WHATWG Headers object from the raw headers first, ~5 µs per request on the
 * predict hot path. Elsewhere (app.request() in tests, other runtimes) it falls back to `c.req.header()`.
 */
export function header(c: Context, name: string): string | undefined {
  const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
  if (incoming?.headers) {
    const v = incoming.headers[name];
    return Array.isArray(v) ? v.join(', ') : v;
  }
  return c.req.header(name);
}

function tooLarge(maxBytes: number): ApiError {
  return new ApiError(413, 'payload_too_large', `request body exceeds ${maxBytes} bytes`);
}

/**
 * Caps the request body at `maxBytes` (413). A request with a Content-Length is judged on the header
 * alone (Node's HTTP parser never delivers more bytes than it declares); chunked or length-less bodies
 * go through hono's `bodyLimit`, which counts while streaming. The split keeps the hot path off
 * `c.req.raw.body`: touching it makes @hono/node-server build a full WHATWG Request and stream per call.
 *
 * @example
 * app.post('/v1/predict', limitBody({ maxBytes: 1 << 20 }), handler);
 */
export function limitBody({ maxBytes = 1 << 20 }: { maxBytes?: number } = {}): MiddlewareHandler {
  const streaming = bodyLimit({
    maxSize: maxBytes,
    onError: () => {
      throw tooLarge(maxBytes);
    },
  });
  return function limitBody(c, next) {
    const length = header(c, 'content-length');
    if (length !== undefined && header(c, 'transfer-encoding') === undefined) {
      const n = Number(length);
      if (!Number.isSafeInteger(n) || n < 0) throw new ApiError(400, 'invalid_request', 'invalid Content-Length');
      if (n > maxBytes) throw tooLarge(maxBytes);
      return next();
    }
    return streaming(c, next);
  };
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
    const semi = ct === undefined ? -1 : ct.indexOf(';');
    const type = ct === undefined ? '' : (semi === -1 ? ct : ct.slice(0, semi)).trim().toLowerCase();
    if (type !== 'application/json') {
      throw new ApiError(415, 'unsupported_media_type', `expected Content-Type application/json, got ${ct === undefined ? 'none' : JSON.stringify(ct.slice(0, 100))}`);
    }
    return next();
  };
}

/** Reads and parses the JSON body; 400 `invalid_json` when it does not parse. */
export async function readJson(c: Context): Promise<unknown> {
  const text = await c.req.text();
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ApiError(400, 'invalid_json', `body is not valid JSON: ${(err as Error).message.slice(0, 200)}`);
  }
}
