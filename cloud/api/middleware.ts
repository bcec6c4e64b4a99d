import { createHash, timingSafeEqual } from 'node:crypto';
import type { Env, MiddlewareHandler } from 'hono';
import type { z } from 'zod';
import { limitBody as sharedLimitBody, mediaType, notJson } from '../../shared/http/middleware.js';
import { ApiError, badRequest } from './errors.js';

/** Where route metadata hangs on a middleware function, for the OpenAPI builder (openapi.ts). */
export const ROUTE_META = Symbol.for('apprentice.cloud-api.route-meta');

export type ValidationTarget = 'json' | 'query' | 'param';

export interface ResponseDoc {
  description: string;
  /** JSON body schema; omitted for non-JSON or empty bodies. */
  schema?: z.ZodType;
  /** Non-JSON media type (e.g. text/csv, application/octet-stream). */
  contentType?: string;
}

export interface RouteDoc {
  summary: string;
  description?: string;
  /** Needs no bearer token. */
  public?: boolean;
  responses: Record<number, ResponseDoc>;
}

export type RouteMeta = { kind: 'doc'; doc: RouteDoc } | { kind: 'validate'; target: ValidationTarget; schema: z.ZodType; optional: boolean };

function tagged<M extends MiddlewareHandler>(fn: M, meta: RouteMeta): M {
  return Object.assign(fn, { [ROUTE_META]: meta });
}

export function routeMeta(handler: unknown): RouteMeta | undefined {
  return typeof handler === 'function' ? (handler as unknown as Record<symbol, RouteMeta | undefined>)[ROUTE_META] : undefined;
}

/**
 * Documents a route for `GET /openapi.json` (a pass-through middleware carrying the doc); request schemas
 * come from the route's `validate()` middleware, so nothing is written twice.
 *
 * @example
 * app.get('/:id', describeRoute({ summary: 'One device', responses: { 200: { description: 'the device', schema: deviceSchema } } }), handler);
 */
export function describeRoute(doc: RouteDoc): MiddlewareHandler {
  return tagged(async function describeRoute(_c, next) {
    await next();
  }, { kind: 'doc', doc });
}

/** sha256 both sides, then timingSafeEqual: equal-length inputs, so neither the content nor the length of the token leaks. */
export function constantTimeEqual(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given, 'utf8').digest();
  const b = createHash('sha256').update(expected, 'utf8').digest();
  return timingSafeEqual(a, b);
}

/**
 * Bearer-token authentication; `exempt` paths pass without a token. 401 JSON with `WWW-Authenticate`
 * otherwise (RFC 6750 §3).
 *
 * @example
 * app.use(bearerAuth({ token: deps.adminToken, exempt: ['/healthz', '/openapi.json'] }));
 */
export function bearerAuth({ token, exempt = [], exemptPrefixes = [] }: { token: string; exempt?: readonly string[]; exemptPrefixes?: readonly string[] }): MiddlewareHandler {
  const open = new Set(exempt);
  return async function bearerAuth(c, next) {
    if (open.has(c.req.path) || exemptPrefixes.some((p) => c.req.path.startsWith(p))) return next();
    const header = c.req.header('authorization');
    const m = header === undefined ? null : /^Bearer[ \t]+([\x21-\x7e]+)[ \t]*$/i.exec(header);
    // Compare even without a token, so the answer takes the same time either way.
    const ok = constantTimeEqual(m?.[1] ?? '', token) && m !== null;
    if (!ok) {
      const message = header === undefined ? 'missing bearer token (Authorization: Bearer TOKEN)' : m === null ? 'malformed Authorization header (expected: Bearer TOKEN)' : 'invalid token';
      throw new ApiError(401, 'unauthorized', message, undefined, { 'WWW-Authenticate': 'Bearer realm="apprentice", error="invalid_token"' });
    }
    return next();
  };
}

/**
 * Caps request bodies at `maxBytes` (413). A Content-Length is judged on the header alone (and must be
 * digits only, else 400); chunked bodies go through hono's `bodyLimit`, which counts while streaming.
 *
 * @example
 * app.use(limitBody({ maxBytes: 1 << 20 }));
 */
export function limitBody({ maxBytes = 1 << 20 }: { maxBytes?: number } = {}): MiddlewareHandler {
  return sharedLimitBody({ maxBytes, strictLength: true });
}

/** `path: message` of a zod error, and the field to name: unknown keys by name, missing ones as "required". */
export function describeIssues(error: z.ZodError): { field: string | undefined; message: string } {
  const parts: string[] = [];
  let field: string | undefined;
  for (const issue of error.issues) {
    const path = issue.path.map(String).join('.');
    if (issue.code === 'unrecognized_keys') {
      const names = issue.keys.map((k) => (path ? `${path}.${k}` : k));
      field ??= names.join(',');
      parts.push(`unknown field(s): ${names.join(', ')}`);
      continue;
    }
    field ??= path || undefined;
    const missing = issue.code === 'invalid_type' && /received undefined$/.test(issue.message);
    parts.push(`${path || '(body)'}: ${missing ? 'required' : issue.message}`);
  }
  return { field, message: parts.join('; ') };
}

/**
 * zod validation at the route. `json`: 415 unless `Content-Type: application/json`, 400 `invalid_json`
 * when it does not parse, 400 `invalid_body` naming the field when it does not match; `optional` lets an
 * empty body through as `{}`. `query`/`param`: 400 `invalid_query`/`invalid_param` naming the field.
 * The parsed value is `c.req.valid(target)`; the schema also feeds `/openapi.json`.
 *
 * @example
 * app.post('/', validate('json', provisionBodySchema), (c) => { const { id } = c.req.valid('json'); ... });
 */
export function validate<T extends ValidationTarget, S extends z.ZodType, E extends Env = Env>(
  target: T,
  schema: S,
  { optional = false }: { optional?: boolean } = {},
): MiddlewareHandler<E, string, { in: { [K in T]: z.input<S> }; out: { [K in T]: z.output<S> } }> {
  const fn: MiddlewareHandler<E, string, { in: { [K in T]: z.input<S> }; out: { [K in T]: z.output<S> } }> = async function validate(c, next) {
    let value: unknown;
    if (target === 'json') {
      const text = await c.req.text();
      const type = mediaType(c.req.header('content-type'));
      if (text.trim() === '' && (optional || type === 'application/json')) {
        if (!optional) throw badRequest('request body is empty; expected a JSON object', undefined, 'invalid_json');
        value = {};
      } else {
        if (type !== 'application/json') throw notJson(c.req.header('content-type'));
        try {
          value = JSON.parse(text);
        } catch (err) {
          throw badRequest(`body is not valid JSON: ${(err as Error).message.slice(0, 200)}`, undefined, 'invalid_json');
        }
      }
    } else if (target === 'query') {
      value = Object.fromEntries(Object.entries(c.req.queries()).map(([k, v]) => [k, v.length === 1 ? v[0] : v]));
    } else {
      value = c.req.param();
    }
    const r = schema.safeParse(value);
    if (!r.success) {
      const { field, message } = describeIssues(r.error);
      const code = target === 'json' ? 'invalid_body' : `invalid_${target}`;
      throw badRequest(message, field, code);
    }
    c.req.addValidatedData(target, r.data as object);
    await next();
  };
  return tagged(fn, { kind: 'validate', target, schema, optional });
}
