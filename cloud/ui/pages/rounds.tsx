import { Hono } from 'hono';
import type { z } from 'zod';
import type { roundSchema, shadowRowSchema } from '../../api/rounds.js';
import type { UiContext } from '../context.js';
import { Page, fmtTime } from '../layout.js';
import { liveStream } from '../live.js';
import type { UiEnv } from '../session.js';
import { ShadowLines } from './shadow.js';

type Round = z.infer<typeof roundSchema>;
type Gate = { pass: boolean; reason: string };

const ACTIVE = new Set(['queued', 'running']);
/** Rounds per model in the chart and its table (the API's page size). */
const ROUNDS_SHOWN = 50;

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const pct = (v: unknown): string => (num(v) === null ? '—' : `${(num(v)! * 100).toFixed(1)}%`);
const gateOf = (r: Round): Gate | undefined => {
  const g = r.metrics?.gate as Partial<Gate> | undefined;
  return g && typeof g.pass === 'boolean' ? { pass: g.pass, reason: String(g.reason ?? '') } : undefined;
};

/**
 * The quality chart of one model, oldest round first: student vs teacher holdout accuracy, their
 * agreement, and the student's agreement with the teacher's labels on the recent hard examples (the
 * devices' own traffic; no ground truth there, the teacher is the label). The gate decisions are
 * markers on the student's line: passed (released) and refused (rejected).
 */
export function roundChartSeries(rounds: Round[]): string {
  const scored = rounds.filter((r) => r.metrics && num(r.metrics.holdoutAccuracy) !== null).reverse();
  const m = (k: string) => scored.map((r) => num(r.metrics![k]));
  const marks = (pass: boolean) => scored.map((r) => (gateOf(r)?.pass === pass ? num(r.metrics!.holdoutAccuracy) : null));
  const lines = [m('holdoutAccuracy'), m('teacherHoldoutAccuracy'), m('holdoutAgreement'), m('hardAgreement')];
  // From a round number below the lowest value up to 1: a few points of accuracy stay visible.
  const lowest = Math.min(1, ...lines.flat().filter((v): v is number => v !== null));
  const y = [Math.max(0, Math.floor((lowest - 0.05) * 10) / 10), 1];
  return JSON.stringify({
    x: scored.map((r) => Date.parse(r.finishedAt ?? r.startedAt ?? r.createdAt) / 1000),
    y,
    series: [
      { label: 'student holdout', values: m('holdoutAccuracy'), color: '#0b5cad' },
      { label: 'teacher holdout', values: m('teacherHoldoutAccuracy'), color: '#9a6700' },
      { label: 'agreement', values: m('holdoutAgreement'), color: '#59636e' },
      { label: 'recent hard (vs teacher)', values: m('hardAgreement'), color: '#8250df' },
      { label: 'gate passed', values: marks(true), points: true, color: '#1a7f37' },
      { label: 'gate refused', values: marks(false), points: true, color: '#c0262d' },
    ],
  });
}

/** A running round's progress: phase, epoch bar, loss, throughput (the part the SSE stream replaces). */
export function RoundLive({ r }: { r: Round }) {
  const p = (r.progress ?? {}) as { phase?: string; detail?: string; epoch?: number; epochs?: number; loss?: number; samplesPerSec?: number; at?: string };
  const epochs = num(p.epochs);
  const share = epochs ? Math.min(1, (num(p.epoch) ?? 0) / epochs) : null;
  const gate = gateOf(r);
  return (
    <div data-state={r.state} data-phase={p.phase ?? ''}>
      <p id="round-state">
        <strong>{r.state}</strong>
        {ACTIVE.has(r.state) && p.phase ? ` — ${p.phase}` : ''}
        {r.error ? <span class="error"> ({r.error})</span> : null}
      </p>
      {ACTIVE.has(r.state) ? (
        <div>
          {p.detail ? <p class="muted">{p.detail}</p> : null}
          {share !== null ? (
            <div>
              <div class="progress" role="progressbar" aria-label="Training epochs" aria-valuemin={0} aria-valuemax={epochs!} aria-valuenow={p.epoch ?? 0}>
                <span style={`width:${Math.round(share * 100)}%`}></span>
              </div>
              <p class="muted">
                epoch {p.epoch ?? 0}/{epochs}
                {num(p.loss) !== null ? `, loss ${num(p.loss)!.toFixed(4)}` : ''}
                {num(p.samplesPerSec) !== null ? `, ${Math.round(num(p.samplesPerSec)!)} samples/s` : ''}
              </p>
            </div>
          ) : null}
          <p class="muted">Updated {fmtTime(p.at ?? null)}</p>
        </div>
      ) : null}
      {gate ? (
        <p id="round-gate">
          Gate: <strong class={gate.pass ? 'ok' : 'error'}>{gate.pass ? 'passed' : 'refused'}</strong> — {gate.reason}
        </p>
      ) : null}
      {r.releaseSeq !== null ? (
        <p>
          Released as <a href={`/ui/releases/${r.releaseSeq}`}>release {r.releaseSeq}</a>
        </p>
      ) : null}
    </div>
  );
}

const METRIC_ROWS: [string, string, (v: unknown) => string][] = [
  ['holdoutAccuracy', 'Student holdout accuracy', pct],
  ['teacherHoldoutAccuracy', 'Teacher holdout accuracy', pct],
  ['holdoutAgreement', 'Student–teacher agreement (holdout)', pct],
  ['hardAgreement', 'Accuracy on recent hard examples (teacher as label)', pct],
  ['parentHoldoutAccuracy', 'Parent holdout accuracy', pct],
  ['parentHardAgreement', 'Parent on recent hard examples', pct],
  ['holdoutCount', 'Holdout examples', (v) => String(num(v) ?? '—')],
  ['hardEvalCount', 'Recent hard examples evaluated', (v) => String(num(v) ?? '—')],
  ['latencyP50Ms', 'Latency p50 (ms)', (v) => (num(v) === null ? '—' : num(v)!.toFixed(2))],
  ['latencyP95Ms', 'Latency p95 (ms)', (v) => (num(v) === null ? '—' : num(v)!.toFixed(2))],
  ['bytes', 'Artifact bytes', (v) => String(num(v) ?? '—')],
  ['epochs', 'Epochs', (v) => String(num(v) ?? '—')],
  ['arch', 'Architecture', (v) => (typeof v === 'string' ? v : '—')],
  ['teacherId', 'Teacher', (v) => (typeof v === 'string' ? v : '—')],
];

/**
 * The per-round metrics that matter to an operator, as a definition list (the chart's text alternative);
 * metrics outside that list (an uploaded model's own numbers) are listed as they are.
 */
export function MetricsList({ metrics }: { metrics: Record<string, unknown> }) {
  const known = METRIC_ROWS.filter(([k]) => metrics[k] !== undefined && metrics[k] !== null);
  const rows: [string, string, string][] = known.length
    ? known.map(([k, label, f]) => [k, label, f(metrics[k])])
    : Object.entries(metrics).filter(([, v]) => num(v) !== null || typeof v === 'string').map(([k, v]) => [k, k, String(v)]);
  if (rows.length === 0) return <p class="muted" id="metrics">No metrics recorded.</p>;
  return (
    <dl class="kv" id="metrics">
      {rows.map(([k, label, text]) => (
        <>
          <dt>{label}</dt>
          <dd data-metric={k}>{text}</dd>
        </>
      ))}
    </dl>
  );
}

/** Rounds: per model, the quality chart over rounds with gate decisions; one round with live progress (SSE). */
export function roundRoutes(ctx: UiContext): Hono<UiEnv> {
  const get = (id: string) => ctx.api<Round>(`/v1/rounds/${encodeURIComponent(id)}`);
  return new Hono<UiEnv>()
    .get('/', async (c) => {
      const { models } = await ctx.api<{ models: { name: string }[] }>('/v1/models');
      const wanted = c.req.query('model');
      if (wanted !== undefined && wanted !== '' && !models.some((m) => m.name === wanted)) return c.json({ error: { code: 'invalid_query', message: `model: no model named ${wanted.slice(0, 64)}` } }, 400);
      const shown = wanted ? models.filter((m) => m.name === wanted) : models;
      const perModel = await Promise.all(shown.map(async (m) => ({ model: m.name, rounds: (await ctx.api<{ rounds: Round[] }>(`/v1/models/${encodeURIComponent(m.name)}/rounds?limit=${ROUNDS_SHOWN}`)).rounds })));
      return c.html(
        <Page title="Rounds" path="/ui/rounds" session={c.get('session')}>
          <form class="filters" method="get" action="/ui/rounds" role="search">
            <label>
              Model
              <select name="model">
                <option value="">all</option>
                {models.map((m) => <option value={m.name} selected={wanted === m.name}>{m.name}</option>)}
              </select>
            </label>
            <button type="submit">Show</button>
          </form>
          {perModel.length === 0 ? <p class="muted">No models yet.</p> : null}
          {perModel.map(({ model, rounds }) => {
            const scored = rounds.filter((r) => num(r.metrics?.holdoutAccuracy) !== null).length;
            return (
              <section aria-label={`Rounds of ${model}`} data-model={model}>
                <h2>{model}</h2>
                {rounds.length === 0 ? <p class="muted">No rounds yet.</p> : null}
                {scored > 0 ? (
                  <figure style="margin:0">
                    <figcaption>Quality over rounds (1 = 100%), gate decisions marked</figcaption>
                    <div class="chart" id={`chart-rounds-${model}`} data-rounds={scored} data-series={roundChartSeries(rounds)}></div>
                  </figure>
                ) : null}
                {rounds.length > 0 ? (
                  <table>
                    <thead>
                      <tr><th style="width:28%">Round</th><th>State</th><th>Student / teacher</th><th class="hide-sm">Hard (vs teacher)</th><th>Gate</th><th class="hide-sm">Finished</th></tr>
                    </thead>
                    <tbody>
                      {rounds.map((r) => {
                        const g = gateOf(r);
                        return (
                          <tr data-round={r.id}>
                            <td class="id"><a href={`/ui/rounds/${encodeURIComponent(r.id)}`}>{r.id}</a></td>
                            <td>{r.state}{r.state === 'running' && r.progress?.phase ? ` (${String(r.progress.phase)})` : ''}{r.releaseSeq !== null ? <div><a href={`/ui/releases/${r.releaseSeq}`}>release {r.releaseSeq}</a></div> : null}</td>
                            <td>{pct(r.metrics?.holdoutAccuracy)} / {pct(r.metrics?.teacherHoldoutAccuracy)}</td>
                            <td class="hide-sm">{pct(r.metrics?.hardAgreement)}</td>
                            <td>{g ? <span class={g.pass ? 'ok' : 'error'} title={g.reason}>{g.pass ? 'passed' : 'refused'}</span> : '—'}</td>
                            <td class="hide-sm">{fmtTime(r.finishedAt)}</td>
                          </tr>
                        );
                      })}
                    </tbody>
                  </table>
                ) : null}
              </section>
            );
          })}
        </Page>,
      );
    })
    .get('/:id', async (c) => {
      const r = await get(c.req.param('id'));
      const shadow = await ctx.api<{ rows: z.infer<typeof shadowRowSchema>[] }>(`/v1/rounds/${encodeURIComponent(r.id)}/shadow`);
      return c.html(
        <Page title={`Round of ${r.model}`} path="/ui/rounds" session={c.get('session')}>
          <p class="id muted">{r.id}</p>
          <dl class="kv">
            <dt>Model</dt><dd><a href={`/ui/rounds?model=${encodeURIComponent(r.model)}`}>{r.model}</a></dd>
            <dt>Trigger</dt><dd>{r.trigger}{r.attempts > 1 ? `, attempt ${r.attempts}` : ''}</dd>
            <dt>Started</dt><dd>{fmtTime(r.startedAt)}</dd>
            <dt>Finished</dt><dd>{fmtTime(r.finishedAt)}</dd>
            <dt>Hard examples</dt><dd>{r.exampleCount ?? '—'}</dd>
          </dl>
          <h2>Progress</h2>
          {ACTIVE.has(r.state) ? (
            <div hx-ext="sse" sse-connect={`/ui/rounds/${encodeURIComponent(r.id)}/live`}>
              <div id="round-live" sse-swap="progress" hx-swap="innerHTML" aria-live="polite">
                <RoundLive r={r} />
              </div>
            </div>
          ) : (
            <div id="round-live">
              <RoundLive r={r} />
            </div>
          )}
          {r.metrics ? (
            <>
              <h2>Metrics</h2>
              <MetricsList metrics={r.metrics} />
              <h2>Shadow evaluation</h2>
              <ShadowLines rows={shadow.rows} />
            </>
          ) : null}
        </Page>,
      );
    })
    .get('/:id/live', async (c) => {
      const id = c.req.param('id');
      const session = c.get('session');
      await get(id); // 404 before the stream starts
      // Read from the registry (the runner writes progress there), so any replica can serve the stream.
      return liveStream(c, { hub: ctx.live, key: `round:${id}`, render: async () => (<RoundLive r={await get(id)} />).toString(), stillValid: () => ctx.sessionLive(session) });
    });
}
