import { Hono } from 'hono';
import { z } from 'zod';
import { EXAMPLE_REASONS, inputSpecSchema } from '../../../shared/protocol/schemas.js';
import type { UiContext } from '../context.js';
import { exampleInput, listExamples } from '../examples-store.js';
import { Page, fmtTime } from '../layout.js';
import type { UiEnv } from '../session.js';
import { inputThumbnail } from '../thumbnail.js';

const PER_PAGE = 48;
const isoish = z.string().regex(/^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?Z?)?$/, 'expected a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM)');
const query = z.object({
  model: z.string().max(64).optional(),
  device: z.string().max(128).optional(),
  reason: z.enum(EXAMPLE_REASONS).optional(),
  since: isoish.optional(),
  until: isoish.optional(),
  page: z.coerce.number().int().min(0).max(10_000).default(0),
});

interface ModelLite {
  name: string;
  labels: string[];
  inputSpec: unknown;
}

/** The hard-example browser: filters, thumbnails drawn from the stored tensors, student vs teacher, why selected. */
export function exampleRoutes(ctx: UiContext): Hono<UiEnv> {
  const specs = new Map<string, { at: number; model: ModelLite }>();
  /** Model specs change rarely; a few seconds of cache spares a lookup per thumbnail. */
  const modelOf = async (name: string): Promise<ModelLite> => {
    const hit = specs.get(name);
    if (hit && Date.now() - hit.at < 5000) return hit.model;
    const model = await ctx.api<ModelLite>(`/v1/models/${encodeURIComponent(name)}`);
    specs.set(name, { at: Date.now(), model });
    return model;
  };
  return new Hono<UiEnv>()
    .get('/', async (c) => {
      const parsed = query.safeParse(Object.fromEntries(Object.entries(c.req.query()).filter(([, v]) => v !== '')));
      if (!parsed.success) return c.json({ error: { code: 'invalid_query', message: parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ') } }, 400);
      const f = parsed.data;
      const [{ models }, { items, more }] = await Promise.all([
        ctx.api<{ models: ModelLite[] }>('/v1/models'),
        listExamples(ctx.registry, { model: f.model, deviceId: f.device, reason: f.reason, since: f.since, until: f.until, limit: PER_PAGE, offset: f.page * PER_PAGE }),
      ]);
      const labels = new Map(models.map((m) => [m.name, m.labels]));
      const name = (model: string | null, k: number | null) => (k === null ? '—' : (labels.get(model ?? '')?.[k] ?? String(k)));
      const argmax = (p: number[]) => p.reduce((b, v, i) => (v > p[b]! ? i : b), 0);
      const keep = new URLSearchParams(Object.entries({ model: f.model, device: f.device, reason: f.reason, since: f.since, until: f.until }).filter((e): e is [string, string] => e[1] !== undefined));
      return c.html(
        <Page title="Hard examples" path="/ui/examples" session={c.get('session')}>
          <form class="filters" method="get" action="/ui/examples" role="search">
            <label>
              Model
              <select name="model">
                <option value="">any</option>
                {models.map((m) => <option value={m.name} selected={f.model === m.name}>{m.name}</option>)}
              </select>
            </label>
            <label>
              Device
              <input type="text" name="device" value={f.device ?? ''} />
            </label>
            <label>
              Reason
              <select name="reason">
                <option value="">any</option>
                {EXAMPLE_REASONS.map((r) => <option value={r} selected={f.reason === r}>{r.replace('_', ' ')}</option>)}
              </select>
            </label>
            <label>
              Captured from
              <input type="date" name="since" value={f.since?.slice(0, 10) ?? ''} />
            </label>
            <label>
              Captured until
              <input type="date" name="until" value={f.until?.slice(0, 10) ?? ''} />
            </label>
            <button type="submit">Filter</button>
          </form>
          {items.length === 0 ? <p class="muted">No examples match.</p> : null}
          <div class="thumbs">
            {items.map((e) => {
              const student = argmax(e.studentOutput);
              return (
                <figure data-example={e.id}>
                  <img src={`/ui/examples/${encodeURIComponent(e.id)}/thumb.png`} alt={`input of example ${e.id.slice(0, 8)}`} width={96} height={96} loading="lazy" />
                  <figcaption>
                    <div>Student: <strong>{name(e.model, student)}</strong> ({Math.round((e.studentOutput[student] ?? 0) * 100)}%)</div>
                    <div>Teacher: {name(e.model, e.teacherClass)}{e.label !== null ? `, label ${name(e.model, e.label)}` : ''}</div>
                    <div>Why: {e.reason.replace('_', ' ')}</div>
                    <div class="id muted">{e.deviceId}</div>
                    <div class="muted">{fmtTime(e.capturedAt)}</div>
                  </figcaption>
                </figure>
              );
            })}
          </div>
          <nav class="pager" aria-label="Pages">
            {f.page > 0 ? <a href={`/ui/examples?${keep}&page=${f.page - 1}`} rel="prev">Previous</a> : null}
            {more ? <a href={`/ui/examples?${keep}&page=${f.page + 1}`} rel="next">Next</a> : null}
          </nav>
        </Page>,
      );
    })
    .get('/:id/thumb.png', async (c) => {
      const ex = await exampleInput(ctx.registry, c.req.param('id'));
      if (!ex) return c.json({ error: { code: 'not_found', message: 'no such example' } }, 404);
      const spec = ex.model ? inputSpecSchema.safeParse((await modelOf(ex.model)).inputSpec) : undefined;
      const png = spec?.success ? await inputThumbnail(ex.input, spec.data, 96, ex.sourceImage) : undefined;
      if (!png) return c.json({ error: { code: 'not_an_image', message: "this example's input is not an image (or does not match its model's input spec)" } }, 422);
      return c.body(new Uint8Array(png), 200, { 'Content-Type': 'image/png', 'Cache-Control': 'private, max-age=3600' });
    });
}
