import { Hono } from 'hono';
import { z } from 'zod';
import { EXAMPLE_REASONS, inputSpecSchema } from '../../../shared/protocol/schemas.js';
import { actorOf, type UiContext } from '../context.js';
import { exampleInput, listExamples } from '../examples-store.js';
import { Csrf, Page, fmtTime } from '../layout.js';
import type { Session, UiEnv } from '../session.js';
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

const QUARANTINE_SHOWN = 24;
const pct = (p: number | null): string => (p === null ? '?' : `${Math.round(p * 100)}%`);

interface Quarantined {
  id: string;
  deviceId: string;
  model: string | null;
  label: number;
  teacherClass: number | null;
  teacherProb: number | null;
  labelProb: number | null;
  capturedAt: string;
}

/** One quarantined feedback label: the operator's label vs the teacher's, with accept and drop (CSRF, audited by the API). */
function QuarantineCard({ q, name, session }: { q: Quarantined; name: (model: string | null, k: number | null) => string; session: Session }) {
  const action = (verb: 'accept' | 'drop', label: string, confirm: string) => (
    <form method="post" action={`/ui/examples/quarantine/${q.id}/${verb}`} hx-post={`/ui/examples/quarantine/${q.id}/${verb}`} hx-target="closest figure" hx-swap="outerHTML" hx-confirm={confirm}>
      <Csrf session={session} />
      <button type="submit" class={verb === 'drop' ? 'danger' : ''} data-action={verb} aria-label={`${label} the label of example ${q.id.slice(0, 8)}`}>
        {label}
      </button>
    </form>
  );
  return (
    <figure data-quarantined={q.id}>
      <img src={`/ui/examples/${encodeURIComponent(q.id)}/thumb.png`} alt={`input of example ${q.id.slice(0, 8)}`} width={96} height={96} loading="lazy" />
      <figcaption>
        <div>Label: <strong>{name(q.model, q.label)}</strong>{q.labelProb !== null ? ` (teacher gives it ${pct(q.labelProb)})` : ''}</div>
        <div>Teacher: {q.teacherClass !== null ? `${name(q.model, q.teacherClass)} (${pct(q.teacherProb)})` : 'no logits stored'}</div>
        <div class="id muted">{q.deviceId}</div>
        <div class="actions">
          {action('accept', 'Accept', 'Accept this label? It is trained on from the next round.')}
          {action('drop', 'Drop', 'Drop this example? It is deleted and never trained on.')}
        </div>
      </figcaption>
    </figure>
  );
}

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
      const [{ models }, { examples: quarantined }, { items, more }] = await Promise.all([
        ctx.api<{ models: ModelLite[] }>('/v1/models'),
        ctx.api<{ examples: Quarantined[] }>(`/v1/examples/quarantine?limit=${QUARANTINE_SHOWN}${f.model ? `&model=${encodeURIComponent(f.model)}` : ''}`),
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
          {quarantined.length > 0 ? (
            <section aria-labelledby="quarantine-h">
              <h2 id="quarantine-h">Quarantined feedback labels</h2>
              <p class="muted">The teacher contradicts these labels with high confidence: they are not trained on until accepted.</p>
              <div class="thumbs quarantine" id="quarantine">
                {quarantined.map((q) => <QuarantineCard q={q} name={name} session={c.get('session')} />)}
              </div>
            </section>
          ) : null}
          {quarantined.length > 0 ? <h2>Hard examples</h2> : null}
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
    .post('/quarantine/:id/:verb{accept|drop}', async (c) => {
      const id = c.req.param('id');
      const verb = c.req.param('verb') as 'accept' | 'drop';
      // The API validates the id, changes the label state and records label.accept / label.drop with this session as the actor.
      await ctx.api(`/v1/examples/quarantine/${encodeURIComponent(id)}/${verb}`, { method: 'POST', actor: actorOf(c.get('session')) });
      if (!c.req.header('hx-request')) return c.redirect('/ui/examples', 303);
      return c.html(
        <figure data-quarantined={id} data-outcome={verb === 'accept' ? 'accepted' : 'dropped'} role="status">
          <figcaption>Example <span class="id">{id.slice(0, 8)}</span>: {verb === 'accept' ? 'label accepted; trained on from the next round.' : 'dropped.'}</figcaption>
        </figure>,
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
