import { Hono } from 'hono';
import type { ApiContext } from './context.js';
import { errorBody, methodNotAllowed } from './errors.js';

/** `GET /healthz` (the process answers) and `GET /readyz` (a model is loaded: 503 until then). */
export function probeRoutes(ctx: ApiContext): Hono {
  const started = ctx.clock();
  return new Hono()
    .get('/healthz', (c) => c.json({ status: 'ok', uptime_s: Math.round((ctx.clock() - started) / 1000) }))
    .get('/readyz', (c) => {
      const cur = ctx.host.current();
      if (!cur) return c.json(errorBody('no_model', 'no model is loaded yet'), 503);
      return c.json({ status: 'ready', model: cur.manifest.model, release: cur.manifest.release });
    })
    .all('/healthz', methodNotAllowed(['GET']))
    .all('/readyz', methodNotAllowed(['GET']));
}
