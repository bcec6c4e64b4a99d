import type { ErrorHandler } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { z } from 'zod';
import type { Logger } from '../../shared/log/index.js';
import { RolloutError } from '../fleet/rollout-store.js';
import { RoundConflictError, UnknownModelError } from '../rounds/types.js';
import { RolloutConflictError, RolloutNotFoundError, RolloutRequestError, RoundInProgressError } from './types.js';

/**
 * The one error body of the cloud API (the same shape as the edge's local API): `field` names the
 * offending request field as a dotted path (`distill.alpha`, `query.model`, `id`).
 */
export const errorBodySchema = z.strictObject({
  error: z.strictObject({ code: z.string(), message: z.string(), field: z.string().optional() }),
});
export type ErrorBody = z.infer<typeof errorBodySchema>;

export function errorBody(code: string, message: string, field?: string): ErrorBody {
  return { error: field === undefined ? { code, message } : { code, message, field } };
}

/**
 * Every deliberate API failure: an HTTPException (so hono middleware treats it as one) carrying the
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
export const notFound = (what: string, field?: string, code = 'not_found'): ApiError => new ApiError(404, code, `${what} not found`, field);
export const conflict = (code: string, message: string, field?: string): ApiError => new ApiError(409, code, message, field);

const STATUS_CODES: Partial<Record<number, string>> = {
  400: 'invalid_request',
  401: 'unauthorized',
  404: 'not_found',
  405: 'method_not_allowed',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
  416: 'range_not_satisfiable',
  503: 'unavailable',
};

/**
 * The single `app.onError`: ApiError and other HTTPExceptions as `ErrorBody`, the services' typed errors
 * (cloud/api/types.ts, and those cloud/rounds and cloud/fleet throw) as 404/409/422; anything else is
 * logged and answered 500 without internals.
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
    if (err instanceof RoundInProgressError || err instanceof RoundConflictError) return c.json(errorBody('round_in_progress', err.message), 409);
    if (err instanceof UnknownModelError) return c.json(errorBody('not_found', err.message, 'name'), 404);
    // cloud/rounds/settings.ts (which loads tfjs): a stored model the round runner cannot use.
    if (err instanceof Error && err.name === 'RoundConfigError') return c.json(errorBody('invalid_model_config', err.message), 422);
    if (err instanceof RolloutError) {
      const [status, code] = ({ not_found: [404, 'rollout_not_found'], conflict: [409, 'rollout_conflict'], invalid: [422, 'invalid_rollout'] } as const)[err.code];
      return c.json(errorBody(code, err.message), status);
    }
    if (err instanceof RolloutNotFoundError) return c.json(errorBody('rollout_not_found', err.message, 'id'), 404);
    if (err instanceof RolloutConflictError) return c.json(errorBody('rollout_conflict', err.message), 409);
    if (err instanceof RolloutRequestError) return c.json(errorBody('invalid_rollout', err.message, err.field), 422);
    log.error({ err, method: c.req.method, path: c.req.path }, 'cloud/api unhandled error');
    return c.json(errorBody('internal', 'internal error'), 500);
  };
}
