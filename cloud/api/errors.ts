import type { ErrorHandler } from 'hono';
import { ApiError, apiErrorHandler, errorBody } from '../../shared/http/errors.js';
import type { Logger } from '../../shared/log/index.js';
import { isTransientPgError } from '../fleet/serial-retry.js';
import { isRegistryBusy } from '../registry/db.js';
import { RolloutError } from '../rollouts/policy.js';
import { RoundConflictError, UnknownModelError } from '../rounds/types.js';
import { RolloutConflictError, RolloutNotFoundError, RolloutRequestError, RoundInProgressError } from './types.js';

// The one error shape, shared with the edge's local API.
export { ApiError, badRequest, errorBody, errorBodySchema, type ErrorBody } from '../../shared/http/errors.js';

export const notFound = (what: string, field?: string, code = 'not_found'): ApiError => new ApiError(404, code, `${what} not found`, field);
export const conflict = (code: string, message: string, field?: string): ApiError => new ApiError(409, code, message, field);

/**
 * The single `app.onError`: ApiError and other HTTPExceptions as `ErrorBody`, the services' typed errors
 * (cloud/api/types.ts, and those cloud/rounds and cloud/fleet throw) as 404/409/422; anything else is
 * logged and answered 500 without internals.
 *
 * @example
 * app.onError(onApiError({ log }));
 */
export function onApiError({ log, refused }: { log: Logger; refused?: { inc(labels: { reason: string }): void } }): ErrorHandler {
  return apiErrorHandler({
    log,
    scope: 'cloud/api',
    statusCodes: { 401: 'unauthorized', 416: 'range_not_satisfiable' },
    logFields: (c) => ({ method: c.req.method, path: c.req.path }),
    mapError(err, c) {
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
      // The registry's write lock was held past its short busy timeout (REGISTRY_BUSY_TIMEOUT_MS): try again.
      if (isRegistryBusy(err)) {
        log.warn({ method: c.req.method, path: c.req.path }, 'cloud/api: registry busy, answered 503');
        refused?.inc({ reason: 'registry_busy' });
        c.header('Retry-After', '1');
        return c.json(errorBody('registry_busy', 'the registry is busy (another writer holds its lock); retry shortly'), 503);
      }
      // PostgreSQL unreachable, restarting, out of connections, or contended past the registry's own retries.
      if (isTransientPgError(err)) {
        log.warn({ err, method: c.req.method, path: c.req.path }, 'cloud/api: registry unavailable, answered 503');
        refused?.inc({ reason: 'registry_unavailable' });
        c.header('Retry-After', '1');
        return c.json(errorBody('registry_unavailable', 'the registry database is not reachable right now; retry shortly'), 503);
      }
      return undefined;
    },
  });
}
