import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { isAbsolute, relative, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { desc, eq } from 'drizzle-orm';
import { Hono } from 'hono';
import { z } from 'zod';
import { signatureSchema } from '../../shared/protocol/schemas.js';
import type { ReleaseRow } from '../registry/schema.js';
import { releaseBySeq } from '../rounds/releases.js';
import type { ApiContext } from './context.js';
import { ApiError, errorBodySchema, notFound } from './errors.js';
import { serveBytes } from './serve-bytes.js';
import { describeRoute, validate } from './middleware.js';
import { limitQuery, modelName, seqString } from './schemas.js';

export const releaseSchema = z.strictObject({
  seq: z.number().int(),
  model: z.string(),
  sha256: z.string(),
  bytes: z.number().int(),
  quantization: z.string(),
  metrics: z.record(z.string(), z.unknown()),
  parentSeq: z.number().int().nullable(),
  /** The release line (issue 13): the cohort this student is for, null on the base line. */
  cohort: z.string().nullable(),
  roundId: z.string().nullable(),
  keyId: z.string().nullable(),
  chunksPublished: z.boolean(),
  createdAt: z.string(),
});
export const releaseDetailSchema = releaseSchema.extend({
  /** The manifest exactly as signed, and its detached signature: together, the `desired` payload. */
  manifest: z.record(z.string(), z.unknown()),
  signature: signatureSchema,
});

export function releaseView(r: ReleaseRow): z.infer<typeof releaseSchema> {
  return {
    seq: r.seq,
    model: r.model,
    sha256: r.sha256,
    bytes: r.bytes,
    quantization: r.quantization,
    metrics: r.metrics as Record<string, unknown>,
    parentSeq: r.parentSeq,
    cohort: r.cohort,
    roundId: r.roundId,
    keyId: (r.signature as { keyId?: string } | null)?.keyId ?? null,
    chunksPublished: r.chunksPublished,
    createdAt: r.createdAt,
  };
}

const seqParam = z.strictObject({ seq: seqString });
const notFoundDoc = { 404: { description: 'no such release', schema: errorBodySchema } };

/** `/v1/releases`: signed releases in the registry, and their artifacts over HTTP with Range support. */
export function releaseRoutes(ctx: ApiContext): Hono {
  const root = resolve(ctx.artifactsDir);
  const find = async (seq: number): Promise<ReleaseRow> => {
    const row = await releaseBySeq(ctx.registry, seq);
    if (!row) throw notFound(`release ${seq}`, 'seq');
    return row;
  };

  return new Hono()
    .get(
      '/',
      describeRoute({ summary: 'List releases, newest first', responses: { 200: { description: 'releases', schema: z.object({ releases: z.array(releaseSchema) }) } } }),
      validate('query', z.strictObject({ model: modelName.optional(), limit: limitQuery })),
      async (c) => {
        const { model, limit = 100 } = c.req.valid('query');
        const { releases } = ctx.registry.t;
        const rows = await ctx.registry.q.select().from(releases).where(model === undefined ? undefined : eq(releases.model, model)).orderBy(desc(releases.seq)).limit(limit);
        return c.json({ releases: rows.map(releaseView) });
      },
    )
    .get(
      '/:seq',
      describeRoute({ summary: 'One release, with its signed manifest', responses: { 200: { description: 'the release', schema: releaseDetailSchema }, ...notFoundDoc } }),
      validate('param', seqParam),
      async (c) => {
        const row = await find(c.req.valid('param').seq);
        return c.json({ ...releaseView(row), manifest: row.manifest as Record<string, unknown>, signature: row.signature as z.infer<typeof signatureSchema> });
      },
    )
    .get(
      '/:seq/artifact',
      describeRoute({
        summary: 'The release artifact (ONNX). Supports Range (single range), If-Range and If-None-Match; ETag is the sha256',
        responses: {
          200: { description: 'the whole file', contentType: 'application/octet-stream' },
          206: { description: 'the requested range (Content-Range)', contentType: 'application/octet-stream' },
          304: { description: 'If-None-Match matched' },
          416: { description: 'range not satisfiable (Content-Range: bytes */SIZE)', schema: errorBodySchema },
          ...notFoundDoc,
        },
      }),
      validate('param', seqParam),
      async (c) => {
        const row = await find(c.req.valid('param').seq);
        const name = `${row.model}-${row.seq}.onnx`;
        if (ctx.blobs?.backend === 'registry') {
          // PostgreSQL (issue 15): the bytes live in the registry, by sha256; every replica serves them.
          const blob = await ctx.blobs.open('model', row.sha256);
          if (!blob) throw new ApiError(404, 'artifact_missing', `artifact of release ${row.seq} is missing`, 'seq');
          if (blob.bytes !== row.bytes) {
            ctx.log.error({ release: row.seq, sha256: row.sha256, expected: row.bytes, actual: blob.bytes }, 'cloud/api release artifact has the wrong size');
            throw new ApiError(500, 'artifact_corrupt', `artifact of release ${row.seq} does not match the registry`);
          }
          return serveBytes(c, { sha256: row.sha256, size: blob.bytes, name, read: (start, end) => blob.read(start, end) });
        }
        const path = resolve(root, row.artifactPath);
        const rel = relative(root, path);
        if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) {
          ctx.log.error({ release: row.seq, path }, 'cloud/api release artifact path is outside artifactsDir');
          throw new ApiError(500, 'artifact_unavailable', `artifact of release ${row.seq} is not available`);
        }
        const st = await stat(path).catch(() => undefined);
        if (!st?.isFile()) throw new ApiError(404, 'artifact_missing', `artifact of release ${row.seq} is missing`, 'seq');
        if (st.size !== row.bytes) {
          ctx.log.error({ release: row.seq, path, expected: row.bytes, actual: st.size }, 'cloud/api release artifact has the wrong size');
          throw new ApiError(500, 'artifact_corrupt', `artifact of release ${row.seq} does not match the registry`);
        }
        return serveBytes(c, {
          sha256: row.sha256,
          size: st.size,
          name,
          read: (start, end) => Readable.toWeb(createReadStream(path, { start, end })) as unknown as ReadableStream<Uint8Array>,
        });
      },
    );
}
