import type { Context, ErrorHandler, NotFoundHandler } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { z } from 'zod';
import type { Logger } from '../../shared/log/index.js';
import { InferenceError, NoModelError } from '../runtime/errors.js';

/** The one error body of the local API. `field` names the offending request field (dotted path). */
export interface ErrorBody {
  error: { code: string; message: string; field?: string };
}

export function errorBody(code: string, message: string, field?: string): ErrorBody {
  return { error: field === undefined ? { code, message } : { code, message, field } };
}

/**
 * Every deliberate API failure. An HTTPException, so hono middleware treats it as one, carrying the
 * machine-readable `code` and the `field` it is about; `onApiError` turns it into `ErrorBody`.
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

export const badRequest = (message: string, field?: string, code = 'invalid_request'): ApiError => new ApiError(400, code, message, field);

/** 400 `invalid_body` from a zod failure, naming the first issue's field (or the unknown keys). */
export function invalidBody(error: z.ZodError): ApiError {
  const issue = error.issues[0]!;
  if (issue.code === 'unrecognized_keys') return badRequest(`unknown field(s): ${issue.keys.join(', ')}`, issue.keys.join(','), 'invalid_body');
  return badRequest(issue.message, issue.path.length > 0 ? issue.path.join('.') : undefined, 'invalid_body');
}

/** For resource apps: answers 405 with an Allow header for methods the path does not serve. */
export function methodNotAllowed(allowed: readonly string[]) {
  const allow = allowed.join(', ');
  return function methodNotAllowed(c: Context): never {
    throw new ApiError(405, 'method_not_allowed', `${c.req.method} is not allowed here; use ${allow}`, undefined, { Allow: allow });
  };
}

const STATUS_CODES: Partial<Record<number, string>> = {
  400: 'invalid_request',
  404: 'not_found',
  405: 'method_not_allowed',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
  503: 'unavailable',
};

/**
 * The single `app.onError`: maps ApiError, other HTTPExceptions and runtime errors to `ErrorBody`.
 * Unexpected errors are logged and answered 500 without internals.
 *
 * @example
 * app.onError(onApiError({ log }));
 */
export function onApiError({ log }: { log: Logger }): ErrorHandler {
  return function onApiError(err, c) {
    if (err instanceof ApiError) {
      if (err.headers) for (const [k, v] of Object.entries(err.headers)) c.header(k, v);
      return c.json(errorBody(err.code, err.message, err.field), err.status);
    }
    if (err instanceof HTTPException) {
      return c.json(errorBody(STATUS_CODES[err.status] ?? 'http_error', err.message || `HTTP ${err.status}`), err.status);
    }
    if (err instanceof NoModelError) return c.json(errorBody('no_model', err.message), 503);
    if (err instanceof InferenceError) {
      // The model changed under a queued request (different input size): safe to retry.
      if (err.code === 'input_size') return c.json(errorBody('model_changed', 'the model changed while the request was queued; retry'), 503);
      log.error({ err, path: c.req.path }, 'edge/api inference failed');
      return c.json(errorBody(err.code, err.message), 500);
    }
    log.error({ err, path: c.req.path }, 'edge/api unhandled error');
    return c.json(errorBody('internal', 'internal error'), 500);
  };
}

/** The single `app.notFound`: a JSON 404 like every other error. */
export const notFoundJson: NotFoundHandler = (c) => c.json(errorBody('not_found', `no route for ${c.req.method} ${c.req.path}`), 404);
