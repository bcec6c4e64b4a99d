import type { MiddlewareHandler } from 'hono';
import { errorBody } from './errors.js';

/**
 * At most `max` requests in progress at once; another gets 503 with `Retry-After: 1` and a JSON body
 * (code `busy`) at once, without reading its body. `exempt` paths (probes, metrics) are neither counted
 * nor refused, so a saturated API still reports itself. `onRefused` logs and counts.
 *
 * @example
 * app.use(concurrencyLimit({ max: 64, exempt: ['/healthz'], onRefused: () => metrics.refused('busy') }));
 */
export function concurrencyLimit({ max, exempt = [], onRefused }: { max: number; exempt?: readonly string[]; onRefused?: (path: string, inFlight: number) => void }): MiddlewareHandler {
  const open = new Set(exempt);
  let inFlight = 0;
  return async function limitConcurrency(c, next) {
    if (open.has(c.req.path)) return next();
    if (inFlight >= max) {
      onRefused?.(c.req.path, inFlight);
      c.header('Retry-After', '1');
      return c.json(errorBody('busy', `${max} requests are already in progress; retry shortly`), 503);
    }
    inFlight++;
    try {
      await next();
    } finally {
      inFlight--;
    }
  };
}
