import { createHash, timingSafeEqual } from 'node:crypto';
import type { MiddlewareHandler } from 'hono';
import { ApiError } from './errors.js';

/** sha256 both sides, then timingSafeEqual: equal-length inputs, so neither the content nor the length of the token leaks. */
export function constantTimeEqual(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given, 'utf8').digest();
  const b = createHash('sha256').update(expected, 'utf8').digest();
  return timingSafeEqual(a, b);
}

/**
 * Bearer-token authentication (the cloud API's admin token, the edge's optional `api.token`); `exempt`
 * paths pass without a token. 401 JSON with `WWW-Authenticate` otherwise (RFC 6750 §3); `onRefused`
 * is told of each refusal (a bound counts what it refuses).
 *
 * @example
 * app.use(bearerAuth({ token: deps.adminToken, exempt: ['/healthz', '/openapi.json'] }));
 */
export function bearerAuth({
  token,
  exempt = [],
  exemptPrefixes = [],
  onRefused,
}: {
  token: string;
  exempt?: readonly string[];
  /** Paths under these prefixes check their own credentials (the cloud's /v1/artifacts/: device Basic or the admin token). */
  exemptPrefixes?: readonly string[];
  onRefused?: (path: string) => void;
}): MiddlewareHandler {
  const open = new Set(exempt);
  return async function bearerAuth(c, next) {
    if (open.has(c.req.path) || exemptPrefixes.some((p) => c.req.path.startsWith(p))) return next();
    const header = c.req.header('authorization');
    const m = header === undefined ? null : /^Bearer[ \t]+([\x21-\x7e]+)[ \t]*$/i.exec(header);
    // Compare even without a token, so the answer takes the same time either way.
    const ok = constantTimeEqual(m?.[1] ?? '', token) && m !== null;
    if (!ok) {
      onRefused?.(c.req.path);
      const message = header === undefined ? 'missing bearer token (Authorization: Bearer TOKEN)' : m === null ? 'malformed Authorization header (expected: Bearer TOKEN)' : 'invalid token';
      throw new ApiError(401, 'unauthorized', message, undefined, { 'WWW-Authenticate': 'Bearer realm="apprentice", error="invalid_token"' });
    }
    return next();
  };
}
