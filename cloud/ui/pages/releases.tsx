import { Hono } from 'hono';
import { z } from 'zod';
import type { releaseDetailSchema, releaseSchema } from '../../api/releases.js';
import type { UiContext } from '../context.js';
import { Page, fmtTime } from '../layout.js';
import type { UiEnv } from '../session.js';
import { MetricsList } from './rounds.js';

type Release = z.infer<typeof releaseSchema>;
type ReleaseDetail = z.infer<typeof releaseDetailSchema>;

/** Ancestors shown on a release page (one API read each). */
const LINEAGE_DEPTH = 8;
const LIST_LIMIT = 200;
const seqParam = z.string().regex(/^\d{1,15}$/, 'expected a release number');
const listQuery = z.object({ model: z.string().max(64).optional() });

const pct = (v: unknown): string => (typeof v === 'number' && Number.isFinite(v) ? `${(v * 100).toFixed(1)}%` : '—');
const kb = (n: number): string => (n >= 1048576 ? `${(n / 1048576).toFixed(1)} MB` : `${(n / 1024).toFixed(1)} kB`);
const bad = (message: string) => ({ error: { code: 'invalid_query', message } });

/**
 * Releases: the list, and one release with its lineage (ancestors and children, the round that made it,
 * its teacher and data), metrics, the signed manifest, the signing key id, and a download of the artifact
 * through the API's artifact route (the console's session stands in for the admin token).
 */
export function releaseRoutes(ctx: UiContext): Hono<UiEnv> {
  const one = (seq: number) => ctx.api<ReleaseDetail>(`/v1/releases/${seq}`);
  return new Hono<UiEnv>()
    .get('/', async (c) => {
      const q = listQuery.safeParse(Object.fromEntries(Object.entries(c.req.query()).filter(([, v]) => v !== '')));
      if (!q.success) return c.json(bad(q.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')), 400);
      const [{ models }, { releases }] = await Promise.all([
        ctx.api<{ models: { name: string }[] }>('/v1/models'),
        ctx.api<{ releases: Release[] }>(`/v1/releases?limit=${LIST_LIMIT}${q.data.model ? `&model=${encodeURIComponent(q.data.model)}` : ''}`),
      ]);
      return c.html(
        <Page title="Releases" path="/ui/releases" session={c.get('session')}>
          <form class="filters" method="get" action="/ui/releases" role="search">
            <label>
              Model
              <select name="model">
                <option value="">all</option>
                {models.map((m) => <option value={m.name} selected={q.data.model === m.name}>{m.name}</option>)}
              </select>
            </label>
            <button type="submit">Show</button>
          </form>
          {releases.length === 0 ? <p class="muted">No releases yet.</p> : null}
          <table id="releases">
            <thead>
              <tr><th>Release</th><th>Model</th><th>Parent</th><th>Holdout</th><th class="hide-sm">Key</th><th class="hide-sm">Created</th></tr>
            </thead>
            <tbody>
              {releases.map((r) => (
                <tr data-release={r.seq}>
                  <td><a href={`/ui/releases/${r.seq}`}>{r.seq}</a></td>
                  <td>{r.model}</td>
                  <td>{r.parentSeq !== null ? <a href={`/ui/releases/${r.parentSeq}`}>{r.parentSeq}</a> : '—'}</td>
                  <td>{pct(r.metrics.holdoutAccuracy)}</td>
                  <td class="hide-sm id">{r.keyId ?? '—'}</td>
                  <td class="hide-sm">{fmtTime(r.createdAt)}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {releases.length === LIST_LIMIT ? <p class="muted">The newest {LIST_LIMIT}; filter by model for older ones.</p> : null}
        </Page>,
      );
    })
    .get('/:seq', async (c) => {
      const p = seqParam.safeParse(c.req.param('seq'));
      if (!p.success) return c.json(bad(`seq: ${p.error.issues[0]!.message}`), 400);
      const r = await one(Number(p.data));
      // Lineage: ancestors by parentSeq (bounded), children from the model's releases.
      const ancestors: Release[] = [];
      let older: number | null = r.parentSeq;
      while (older !== null && ancestors.length < LINEAGE_DEPTH) {
        const a: Release | undefined = await one(older).catch(() => undefined);
        if (!a) break;
        ancestors.push(a);
        older = a.parentSeq;
      }
      const truncated = ancestors.length === LINEAGE_DEPTH && older !== null ? older : null;
      const { releases: siblings } = await ctx.api<{ releases: Release[] }>(`/v1/releases?model=${encodeURIComponent(r.model)}&limit=1000`);
      const children = siblings.filter((x) => x.parentSeq === r.seq).sort((a, b) => a.seq - b.seq);
      const m = r.manifest as { teacher?: { id?: string }; lineage?: { exampleCount?: number; round?: string; reissueOf?: number; source?: string }; expiresAt?: string };
      return c.html(
        <Page title={`Release ${r.seq} of ${r.model}`} path="/ui/releases" session={c.get('session')}>
          <dl class="kv">
            <dt>Model</dt><dd><a href={`/ui/releases?model=${encodeURIComponent(r.model)}`}>{r.model}</a></dd>
            <dt>Artifact</dt>
            <dd>
              <a id="download" href={`/ui/releases/${r.seq}/artifact`} download={`${r.model}-${r.seq}.onnx`}>Download {r.model}-{r.seq}.onnx</a> ({kb(r.bytes)}, {r.quantization})
              <div class="id muted">sha256 {r.sha256}</div>
            </dd>
            <dt>Signed by key</dt><dd class="id" id="key-id">{r.keyId ?? '—'}</dd>
            <dt>Created</dt><dd>{fmtTime(r.createdAt)}</dd>
            <dt>Expires</dt><dd>{fmtTime(m.expiresAt ?? null)}</dd>
            <dt>Published</dt><dd>{r.chunksPublished ? 'chunks published over MQTT' : 'not yet published'}</dd>
          </dl>
          <h2>Lineage</h2>
          {truncated !== null ? <p class="muted">Older ancestors from <a href={`/ui/releases/${truncated}`}>release {truncated}</a> not shown.</p> : null}
          <ol class="lineage" id="lineage" aria-label="Ancestors, oldest first, then this release">
            {[...ancestors].reverse().map((a) => (
              <li><a href={`/ui/releases/${a.seq}`}>release {a.seq}</a> <span class="muted">({pct(a.metrics.holdoutAccuracy)}, {fmtTime(a.createdAt)})</span></li>
            ))}
            <li aria-current="true"><strong>release {r.seq}</strong> <span class="muted">({pct(r.metrics.holdoutAccuracy)})</span></li>
          </ol>
          {children.length ? (
            <p id="children">Children: {children.map((ch, i) => <>{i ? ', ' : ''}<a href={`/ui/releases/${ch.seq}`}>release {ch.seq}</a></>)}</p>
          ) : <p class="muted" id="children">No child release yet.</p>}
          <dl class="kv">
            <dt>Teacher</dt><dd id="teacher">{m.teacher?.id ?? '—'}</dd>
            <dt>Round</dt><dd>{r.roundId ? <a href={`/ui/rounds/${encodeURIComponent(r.roundId)}`} class="id">{r.roundId}</a> : (m.lineage?.source ?? '—')}</dd>
            <dt>Data</dt><dd id="data">{m.lineage?.exampleCount ?? 0} hard examples{m.lineage?.reissueOf !== undefined ? `; re-issue of release ${m.lineage.reissueOf}` : ''}</dd>
          </dl>
          <h2>Metrics</h2>
          <MetricsList metrics={r.metrics} />
          <details>
            <summary>Signed manifest</summary>
            <pre id="manifest">{JSON.stringify(r.manifest, null, 2)}</pre>
            <p class="muted">Signature: {r.signature.alg} by <span class="id">{r.signature.keyId}</span></p>
          </details>
        </Page>,
      );
    })
    .get('/:seq/artifact', async (c) => {
      const p = seqParam.safeParse(c.req.param('seq'));
      if (!p.success) return c.json(bad(`seq: ${p.error.issues[0]!.message}`), 400);
      // Through the API's own route: same checks (size, path), ETag and Range; only the session differs.
      const pass: Record<string, string> = {};
      for (const h of ['range', 'if-range', 'if-none-match']) {
        const v = c.req.header(h);
        if (v !== undefined) pass[h] = v;
      }
      const res = await ctx.apiRaw(`/v1/releases/${p.data}/artifact`, pass);
      ctx.log.info({ release: Number(p.data), who: c.get('session').who, status: res.status }, 'ui/release download');
      return res;
    });
}
