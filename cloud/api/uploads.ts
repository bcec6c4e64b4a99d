import { randomUUID } from 'node:crypto';
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Hono } from 'hono';
import { Counter } from 'prom-client';
import { z } from 'zod';
import { mediaType } from '../../shared/http/middleware.js';
import { signManifest } from '../../shared/manifest/sign.js';
import { releaseBySeq } from '../rounds/releases.js';
import { releaseUploadedModel, UploadRejectedError } from '../rounds/upload.js';
import { audit } from './audit.js';
import type { ApiContext } from './context.js';
import { uploadSlots } from './upload-slots.js';
import { ApiError, errorBodySchema } from './errors.js';
import { describeRoute, validate } from './middleware.js';
import { releaseSchema, releaseView } from './releases.js';
import { modelName } from './schemas.js';

/** Path of the upload route, which `createCloudApi` exempts from the 1 MiB JSON body limit (it has its own). */
export const UPLOAD_PATH = /^\/v1\/models\/[^/]+\/releases\/?$/;

const metricsQuery = z
  .string()
  .max(4096)
  .transform((s, ctx) => {
    let v: unknown;
    try {
      v = JSON.parse(s);
    } catch {
      ctx.addIssue({ code: 'custom', message: 'not JSON' });
      return z.NEVER;
    }
    const r = z.record(z.string().max(64), z.number().finite()).safeParse(v);
    if (!r.success) {
      ctx.addIssue({ code: 'custom', message: 'expected a JSON object of finite numbers, e.g. {"accuracy":0.93}' });
      return z.NEVER;
    }
    return r.data;
  });

const uploadQuery = z.strictObject({ quantize: z.enum(['int8']).optional(), output: z.enum(['logits', 'probs']).optional(), metrics: metricsQuery.optional() });
const uploadResponse = releaseSchema.extend({ problems: z.array(z.string()) });

/** Seconds a client is told to wait when every upload slot is taken. */
const BUSY_RETRY_SECONDS = 10;

const tooLarge = (max: number): ApiError => new ApiError(413, 'payload_too_large', `the ONNX file exceeds api.maxUploadBytes (${max} bytes)`);

/**
 * Streams the request body to `path`, counting bytes: past `max` the stream fails with 413 and the partial
 * file is left for the caller's cleanup. The body is never held in memory whole.
 */
export async function streamToFile(body: ReadableStream<Uint8Array>, path: string, max: number, overflow: (max: number) => Error = tooLarge): Promise<number> {
  let n = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      n += chunk.length;
      cb(n > max ? overflow(max) : null, chunk);
    },
  });
  // Opened before streaming (not lazily by createWriteStream), so the file exists before the caller's
  // cleanup can run: a lazy open that finishes after the rm would leave an orphan temp file.
  const fh = await open(path, 'wx');
  await pipeline(Readable.fromWeb(body as import('node:stream/web').ReadableStream<Uint8Array>), counter, fh.createWriteStream());
  return n;
}

/**
 * `POST /v1/models/{name}/releases`: "bring your own model". The body is an ONNX file; it is checked,
 * signed and stored as a release of `name` (cloud/rounds/upload.ts), then published like a distilled one.
 */
export function uploadRoutes(ctx: ApiContext): Hono {
  // Every refusal is counted by reason, every success as `released` (an unregistered counter without a registry).
  const uploads = new Counter({ name: 'apprentice_cloud_release_uploads_total', help: 'ONNX uploads by result: released, or the refusal code (payload_too_large, not_onnx, wrong_input_shape, wrong_output_size, wrong_output_kind, unknown_model, quantize_failed, uploads_busy, ...)', labelNames: ['result'] as const, registers: ctx.uploads.metrics ? [ctx.uploads.metrics] : [] });
  const signer = { sign: (m: Parameters<typeof signManifest>[0]) => signManifest(m, ctx.keys.active()) };
  // Each upload holds a temp file of up to maxUploadBytes, the whole model in memory and an ORT session:
  // the slots bound the disk, memory and CPU that concurrent uploads can take.
  const slots = uploadSlots(ctx);
  return new Hono().post(
    '/:name/releases',
    describeRoute({
      summary: 'Upload an ONNX model trained elsewhere as a new signed release of the model (body: application/octet-stream)',
      responses: {
        201: { description: 'the release; `problems` lists publish/rollout failures (the release stands)', schema: uploadResponse },
        400: { description: 'empty body or bad query', schema: errorBodySchema },
        404: { description: 'no such model', schema: errorBodySchema },
        413: { description: 'larger than api.maxUploadBytes', schema: errorBodySchema },
        503: { description: 'api.maxConcurrentUploads uploads are already in progress; retry after Retry-After seconds', schema: errorBodySchema },
        415: { description: 'not application/octet-stream', schema: errorBodySchema },
        422: { description: 'not ONNX, wrong input shape or output size for the model, or output=probs on a model that outputs no probabilities', schema: errorBodySchema },
      },
    }),
    validate('param', z.strictObject({ name: modelName })),
    validate('query', uploadQuery),
    async (c) => {
      const { name } = c.req.valid('param');
      const { quantize, output, metrics } = c.req.valid('query');
      const max = ctx.limits.maxUploadBytes;
      if (slots.n >= ctx.limits.maxConcurrentUploads) {
        uploads.inc({ result: 'uploads_busy' });
        ctx.log.warn({ model: name, inFlight: slots.n, max: ctx.limits.maxConcurrentUploads }, 'cloud/api upload refused: all upload slots busy');
        c.header('Retry-After', String(BUSY_RETRY_SECONDS));
        throw new ApiError(503, 'uploads_busy', `${slots.n} uploads are in progress (api.maxConcurrentUploads); retry in ${BUSY_RETRY_SECONDS} s`);
      }
      slots.n++;
      const tmpDir = join(ctx.artifactsDir, 'tmp');
      const tmp = join(tmpDir, `upload-${randomUUID()}.onnx`);
      try {
        const ct = c.req.header('content-type');
        if (mediaType(ct) !== 'application/octet-stream') throw new ApiError(415, 'unsupported_media_type', `expected Content-Type: application/octet-stream (an ONNX file), got ${ct ?? 'none'}`);
        const length = c.req.header('content-length');
        if (length !== undefined && Number(length) > max) throw tooLarge(max);
        const body = c.req.raw.body;
        if (!body || length === '0') throw new ApiError(400, 'empty_body', 'the request body is empty; send the ONNX file');
        await mkdir(tmpDir, { recursive: true });
        const n = await streamToFile(body, tmp, max);
        if (n === 0) throw new ApiError(400, 'empty_body', 'the request body is empty; send the ONNX file');
        const onnx = new Uint8Array(await readFile(tmp));
        const rel = await releaseUploadedModel({
          registry: ctx.registry,
          dataDir: ctx.artifactsDir,
          blobs: ctx.blobs,
          signer,
          model: name,
          onnx,
          quantize,
          output,
          metrics,
          publicBaseUrl: ctx.uploads.publicBaseUrl,
          now: ctx.clock(),
        });
        uploads.inc({ result: 'released' });
        ctx.log.info({ model: name, seq: rel.seq, sha256: rel.sha256, bytes: rel.bytes, quantization: rel.quantization, output: rel.output }, 'cloud/api release uploaded');
        await audit(ctx, c, { action: 'model.upload', target: name, detail: { release: rel.seq, sha256: rel.sha256, quantization: rel.quantization } });
        const problems = ctx.uploads.publish ? await ctx.uploads.publish(rel.seq) : [];
        for (const p of problems) ctx.log.warn({ model: name, seq: rel.seq, problem: p }, 'cloud/api uploaded release: publish problem');
        const row = (await releaseBySeq(ctx.registry, rel.seq))!;
        return c.json({ ...releaseView(row), problems }, 201);
      } catch (err) {
        uploads.inc({ result: err instanceof UploadRejectedError || err instanceof ApiError ? err.code : 'error' });
        if (err instanceof UploadRejectedError) {
          ctx.log.warn({ model: name, code: err.code, reason: err.message }, 'cloud/api upload refused');
          throw new ApiError(err.status, err.code, err.message, err.code === 'unknown_model' ? 'name' : 'body');
        }
        if (err instanceof ApiError && err.status === 413) ctx.log.warn({ model: name, max }, 'cloud/api upload refused: too large');
        throw err;
      } finally {
        slots.n--;
        await rm(tmp, { force: true });
      }
    },
  );
}
