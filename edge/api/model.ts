import { Hono } from 'hono';
import type { ApiContext } from './context.js';
import { ApiError, methodNotAllowed } from './errors.js';

/** `GET /v1/model`: what is being served (manifest summary, sha256, when it was loaded). */
export function modelRoutes(ctx: ApiContext): Hono {
  return new Hono()
    .get('/', (c) => {
      const cur = ctx.host.current();
      if (!cur) throw new ApiError(503, 'no_model', 'no model is loaded yet');
      const m = cur.manifest;
      return c.json({
        model: m.model,
        release: m.release,
        sha256: cur.sha256,
        loaded_at: new Date(cur.loadedAt).toISOString(),
        quantization: m.artifact.quantization,
        bytes: m.artifact.bytes,
        input: m.input,
        output: m.output,
        labels: m.labels,
        teacher: m.teacher,
        metrics: m.metrics,
        parent: m.parent,
        created_at: m.createdAt,
        expires_at: m.expiresAt,
      });
    })
    .all('/', methodNotAllowed(['GET']));
}
