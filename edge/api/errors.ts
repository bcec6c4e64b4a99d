import type { Context, ErrorHandler, NotFoundHandler } from 'hono';
import type { z } from 'zod';
import { ApiError, apiErrorHandler, badRequest, errorBody } from '../../shared/http/errors.js';
import type { Logger } from '../../shared/log/index.js';
import { InferenceError, NoModelError } from '../runtime/errors.js';

// The one error shape, shared with the cloud API.
export { ApiError, badRequest, errorBody, type ErrorBody } from '../../shared/http/errors.js';

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

/**
 * The single `app.onError`: maps ApiError, other HTTPExceptions and runtime errors to `ErrorBody`.
 * Unexpected errors are logged and answered 500 without internals.
 *
 * @example
 * app.onError(onApiError({ log }));
 */
export function onApiError({ log }: { log: Logger }): ErrorHandler {
  return apiErrorHandler({
    log,
    scope: 'edge/api',
    mapError(err, c) {
      if (err instanceof NoModelError) return c.json(errorBody('no_model', err.message), 503);
      if (err instanceof InferenceError) {
        // The model changed under a queued request (different input size): safe to retry.
        if (err.code === 'input_size') return c.json(errorBody('model_changed', 'the model changed while the request was queued; retry'), 503);
        log.error({ err, path: c.req.path }, 'edge/api inference failed');
        return c.json(errorBody(err.code, err.message), 500);
      }
      return undefined;
    },
  });
}

/** The single `app.notFound`: a JSON 404 like every other error. */
export const notFoundJson: NotFoundHandler = (c) => c.json(errorBody('not_found', `no route for ${c.req.method} ${c.req.path}`), 404);
