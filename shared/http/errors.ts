import type { Context, ErrorHandler } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { z } from 'zod';
import type { Logger } from '../log/index.js';

/**
 * The one error body of the HTTP APIs (the cloud API and the edge's local API): `field` names the
 * offending request field as a dotted path (`distill.alpha`, `query.model`, `id`).
 */
export const errorBodySchema = z.strictObject({
  error: z.strictObject({ code: z.string(), message: z.string(), field: z.string().optional() }),
});
export type ErrorBody = z.infer<typeof errorBodySchema>;

/**
 * @example
 * return c.json(errorBody('no_model', 'no model loaded yet'), 503);
 */
export function errorBody(code: string, message: string, field?: string): ErrorBody {
  return { error: field === undefined ? { code, message } : { code, message, field } };
}

/**
 * Every deliberate API failure: an HTTPException (so hono middleware treats it as one) carrying the
 * machine-readable `code` and the `field` it is about; `apiErrorHandler` turns it into `ErrorBody`.
 *
 * @example
 * throw new ApiError(405, 'method_not_allowed', 'use GET', undefined, { Allow: 'GET' });
 */
export class ApiError extends HTTPException {
  override readonly name = 'ApiError';
  constructor(
    status: ContentfulStatusCode,
    readonly code: string,
    message: string,
    readonly field?: string,
    readonly headers?: Record<string, string>,
  ) {
    super(status, { message });
  }
}

/**
 * @example
 * throw badRequest('unknown model', 'query.model');
 */
export const badRequest = (message: string, field?: string, code = 'invalid_request'): ApiError => new ApiError(400, code, message, field);

/** The `code` of a bare HTTPException (thrown by hono or its middleware), by status; others are `http_error`. */
export const HTTP_STATUS_CODES: Readonly<Partial<Record<number, string>>> = {
  400: 'invalid_request',
  404: 'not_found',
  405: 'method_not_allowed',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
  503: 'unavailable',
};

export interface ApiErrorHandlerOptions {
  log: Logger;
  /** Names the API in the log line of an unexpected error: `<scope> unhandled error`. */
  scope: string;
  /** More `code`s for bare HTTPExceptions, over `HTTP_STATUS_CODES`. */
  statusCodes?: Readonly<Partial<Record<number, string>>>;
  /** The service's own typed errors as responses; `undefined` passes the error on (to a logged 500). */
  mapError?: (err: Error, c: Context) => Response | undefined;
  /** What is logged with an unexpected error, besides `err`. */
  logFields?: (c: Context) => Record<string, unknown>;
}

/**
 * The single `app.onError`: ApiError and other HTTPExceptions as `ErrorBody` (with ApiError's headers),
 * then `mapError`; anything else is logged and answered 500 without internals.
 *
 * @example
 * app.onError(apiErrorHandler({ log, scope: 'edge/api', mapError: (err, c) => (err instanceof NoModelError ? c.json(errorBody('no_model', err.message), 503) : undefined) }));
 */
export function apiErrorHandler({
  log,
  scope,
  statusCodes = {},
  mapError = () => undefined,
  logFields = (c) => ({ path: c.req.path }),
}: ApiErrorHandlerOptions): ErrorHandler {
  const codes: Partial<Record<number, string>> = { ...HTTP_STATUS_CODES, ...statusCodes };
  return function onApiError(err, c) {
    if (err instanceof ApiError) {
      if (err.headers) for (const [k, v] of Object.entries(err.headers)) c.header(k, v);
      return c.json(errorBody(err.code, err.message, err.field), err.status);
    }
    if (err instanceof HTTPException) {
      return c.json(errorBody(codes[err.status] ?? 'http_error', err.message || `HTTP ${err.status}`), err.status);
    }
    const mapped = mapError(err, c);
    if (mapped !== undefined) return mapped;
    log.error({ err, ...logFields(c) }, `${scope} unhandled error`);
    return c.json(errorBody('internal', 'internal error'), 500);
  };
}
