import { and, asc, count, eq, gt, gte, isNotNull, isNull, or, type SQL } from 'drizzle-orm';
import { Hono } from 'hono';
import { z } from 'zod';
import { isoTime } from '../../shared/protocol/schemas.js';
import type { ApiContext } from './context.js';
import { errorBodySchema, notFound } from './errors.js';
import { describeRoute, validate } from './middleware.js';
import { modelName } from './schemas.js';
import { modelsWithExamples, retentionCounts } from '../registry/retention.js';
import { limitsFor } from '../registry/retention-job.js';

export const exampleStatsSchema = z.strictObject({
  total: z.number().int(),
  labelled: z.number().int(),
  byDevice: z.record(z.string(), z.number().int()),
  byReason: z.record(z.string(), z.number().int()),
  /** Keyed by release sequence; `none` for examples captured with no model loaded. */
  byRelease: z.record(z.string(), z.number().int()),
  /**
   * Retention per model (all models, or the one asked for): the limits that apply and what retention
   * deleted so far (lifetime), with the runs it skipped because a round of the model was in progress.
   */
  retention: z.record(
    z.string(),
    z.object({
      maxRows: z.number().int().nullable(),
      maxAgeDays: z.number().nullable(),
      deletedByAge: z.number().int(),
      deletedByRows: z.number().int(),
      skippedForRound: z.number().int(),
      lastRunAt: z.string().nullable(),
    }),
  ),
  /** Feedback labels in quarantine (the teacher contradicts them; not trained on until accepted). */
  quarantined: z.number().int(),
  /**
   * What ingest did not store, per device, across cloud restarts: `deferred` by the rate cap (sent
   * again later), `refused` for good, `labelsIgnored` (labels on non-feedback rows). All models.
   */
  ingestByDevice: z.record(z.string(), z.strictObject({ deferred: z.number().int(), refused: z.number().int(), labelsIgnored: z.number().int() })),
});

export const exportQuerySchema = z.strictObject({
  model: modelName,
  /** Only examples ingested at or after this time. */
  since: isoTime.optional(),
  format: z.literal('csv').default('csv'),
  /**
   * `true`: labelled examples only, with a `label` column; `false`: unlabelled ones only; omitted: all
   * examples, features only (a transfer set: the teacher labels them). The CSV loader has no per-row
   * missing label, so labelled and unlabelled rows never share a file.
   */
  labelled: z.enum(['true', 'false']).optional(),
});

/**
 * Shortest decimal that reads back as the same float32 (inputs are stored as float32), so the CSV
 * round-trips exactly and stays about half the size of full double precision.
 */
export function formatFloat32(v: number): string {
  if (Number.isInteger(v)) return String(v);
  for (let p = 6; p < 9; p++) {
    const s = v.toPrecision(p);
    if (Math.fround(Number(s)) === v) return String(Number(s));
  }
  return String(Number(v.toPrecision(9)));
}

/** One CSV line of a stored example (float32 little-endian blob), or undefined when it cannot be one. */
function csvLine(input: Buffer, size: number, label: number | null | undefined): string | undefined {
  if (input.byteLength !== size * 4) return undefined;
  const cells = new Array<string>(size + (label === undefined ? 0 : 1));
  for (let i = 0; i < size; i++) {
    const v = input.readFloatLE(i * 4);
    if (!Number.isFinite(v)) return undefined;
    cells[i] = formatFloat32(v);
  }
  if (label !== undefined) {
    if (label === null || !Number.isInteger(label) || label < 0) return undefined;
    cells[size] = String(label);
  }
  return cells.join(',') + '\n';
}

/**
 * `/v1/examples`: what the fleet sent back. `GET /stats` counts; `GET /export` streams a CSV that
 * `apprentice distill --data csv:FILE` and `loadDataset('csv:FILE')` read: header `x0..x{n-1}[,label]`,
 * one row per example, values as the model saw them (scaled: load with identity scaling, the CSV default).
 */
export function exampleRoutes(ctx: ApiContext): Hono {
  const { examples, models } = ctx.registry.t;
  return new Hono()
    .get(
      '/stats',
      describeRoute({ summary: 'Example counts by device, by reason and by release; quarantined labels; per-device deferred/refused counts', responses: { 200: { description: 'counts', schema: exampleStatsSchema } } }),
      validate('query', z.strictObject({ model: modelName.optional() })),
      async (c) => {
        const { model } = c.req.valid('query');
        const where = model === undefined ? undefined : eq(examples.model, model);
        const group = <K extends 'deviceId' | 'reason' | 'releaseSeq'>(key: K) => ctx.registry.q.select({ key: examples[key], n: count() }).from(examples).where(where).groupBy(examples[key]);
        const countOf = async (w: SQL | undefined) => (await ctx.registry.q.select({ n: count() }).from(examples).where(w))[0]?.n ?? 0;
        const total = await countOf(where);
        const labelled = await countOf(and(where, isNotNull(examples.label)));
        const quarantined = await countOf(and(where, eq(examples.labelState, 'quarantined')));
        const toRecord = (rows: { key: string | number | null; n: number }[]) => Object.fromEntries(rows.map((r) => [r.key === null ? 'none' : String(r.key), r.n]));
        const counts = await retentionCounts(ctx.registry, model);
        const names = model !== undefined ? [model] : [...new Set([...Object.keys(counts), ...(await modelsWithExamples(ctx.registry))])].sort();
        const none = { deletedByAge: 0, deletedByRows: 0, skippedForRound: 0, lastRunAt: null };
        const retention = Object.fromEntries(names.map((m) => [m, { ...(ctx.retention ? limitsFor(ctx.retention, m) : { maxRows: null, maxAgeDays: null }), ...(counts[m] ?? none) }]));
        const [byDevice, byReason, byRelease] = [toRecord(await group('deviceId')), toRecord(await group('reason')), toRecord(await group('releaseSeq'))];
        return c.json({ total, labelled, byDevice, byReason, byRelease, retention, quarantined, ingestByDevice: ctx.ingestCounts() });
      },
    )
    .get(
      '/export',
      describeRoute({
        summary: 'Stream a model\'s examples as a CSV dataset (for `apprentice distill --data csv:FILE`)',
        responses: { 200: { description: 'CSV: header x0..x{n-1}[,label], one row per example', contentType: 'text/csv' }, 404: { description: 'no such model', schema: errorBodySchema } },
      }),
      validate('query', exportQuerySchema),
      async (c) => {
        const q = c.req.valid('query');
        const [model] = await ctx.registry.q.select({ inputSpec: models.inputSpec }).from(models).where(eq(models.name, q.model));
        if (!model) throw notFound(`model ${q.model}`, 'model');
        const size = (model.inputSpec as { shape: number[] }).shape.reduce((a, b) => a * b, 1);
        const withLabel = q.labelled === 'true';
        const filters: SQL[] = [eq(examples.model, q.model)];
        if (q.since !== undefined) filters.push(gte(examples.ingestedAt, new Date(q.since).toISOString()));
        if (q.labelled === 'true') filters.push(isNotNull(examples.label));
        if (q.labelled === 'false') filters.push(isNull(examples.label));
        const header = Array.from({ length: size }, (_, i) => `x${i}`).concat(withLabel ? ['label'] : []).join(',') + '\n';

        // Keyset pages, not one long-lived cursor: better-sqlite3 would keep the connection busy (ingest
        // could not write), a PostgreSQL cursor a pooled connection, for as long as the client takes to read.
        let cursor: { at: string; id: string } | undefined;
        let sent = 0;
        let skipped = 0;
        const encoder = new TextEncoder();
        const stream = new ReadableStream<Uint8Array>({
          start(controller) {
            controller.enqueue(encoder.encode(header));
          },
          async pull(controller) {
            // Loop until something is enqueued or the end: a pull that enqueues nothing is not called again.
            for (;;) {
              const after = cursor === undefined ? undefined : or(gt(examples.ingestedAt, cursor.at), and(eq(examples.ingestedAt, cursor.at), gt(examples.id, cursor.id)));
              const rows = await ctx.registry.q
                .select({ id: examples.id, at: examples.ingestedAt, input: examples.input, label: examples.label })
                .from(examples)
                .where(and(...filters, after))
                .orderBy(asc(examples.ingestedAt), asc(examples.id))
                .limit(ctx.limits.exportBatchRows);
              let chunk = '';
              for (const r of rows) {
                const line = csvLine(r.input, size, withLabel ? r.label : undefined);
                if (line === undefined) skipped++;
                else {
                  chunk += line;
                  sent++;
                }
              }
              if (chunk) controller.enqueue(encoder.encode(chunk));
              const last = rows.at(-1);
              if (!last || rows.length < ctx.limits.exportBatchRows) {
                if (skipped) ctx.log.warn({ model: q.model, skipped, size }, 'cloud/api examples export skipped rows whose input does not match the model');
                ctx.log.info({ model: q.model, rows: sent }, 'examples exported');
                controller.close();
                return;
              }
              cursor = { at: last.at, id: last.id };
              if (chunk) return;
            }
          },
        });
        return c.body(stream, 200, {
          'Content-Type': 'text/csv; charset=utf-8',
          'Content-Disposition': `attachment; filename="${q.model}-examples.csv"`,
          'Cache-Control': 'no-store',
        });
      },
    );
}
