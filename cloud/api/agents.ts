import { randomUUID } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Hono } from 'hono';
import { Counter } from 'prom-client';
import { z } from 'zod';
import { mediaType } from '../../shared/http/middleware.js';
import { AGENT_PLATFORMS, MAX_AGENT_BYTES, upgradeFromList } from '../../shared/protocol/agent.js';
import { agentVersion, signatureSchema } from '../../shared/protocol/schemas.js';
import { ArchiveRejectedError } from '../agents/archive.js';
import { AgentMismatchError, releaseAgent } from '../agents/release.js';
import { agentRelease, DuplicateAgentReleaseError, listAgentReleases } from '../agents/store.js';
import type { AgentReleaseRow } from '../registry/schema.js';
import { audit } from './audit.js';
import type { ApiContext } from './context.js';
import { uploadSlots } from './upload-slots.js';
import { ApiError, errorBodySchema, notFound } from './errors.js';
import { describeRoute, validate } from './middleware.js';
import { streamToFile } from './uploads.js';

/** Path of the agent push, which `createCloudApi` exempts from the JSON body limit (it streams to disk under its own). */
export const AGENT_UPLOAD_PATH = /^\/v1\/agents\/?$/;

export const agentReleaseSchema = z.strictObject({
  agentSeq: z.number().int(),
  version: z.string(),
  platform: z.string(),
  sha256: z.string(),
  bytes: z.number().int(),
  files: z.number().int(),
  reissueOf: z.number().int().nullable(),
  /** Agent versions that may install it (`*`: any). */
  upgradeFrom: z.array(z.string()),
  keyId: z.string().nullable(),
  chunksPublished: z.boolean(),
  createdAt: z.string(),
  expiresAt: z.string().nullable(),
});
const agentDetailSchema = agentReleaseSchema.extend({ manifest: z.record(z.string(), z.unknown()), signature: signatureSchema });

export function agentReleaseView(r: AgentReleaseRow): z.infer<typeof agentReleaseSchema> {
  const m = r.manifest as { files?: unknown[]; expiresAt?: string; upgradeFrom?: string[] };
  return {
    agentSeq: r.agentSeq,
    version: r.version,
    platform: r.platform,
    sha256: r.sha256,
    bytes: r.bytes,
    files: Array.isArray(m.files) ? m.files.length : 0,
    reissueOf: r.reissueOf,
    upgradeFrom: m.upgradeFrom ?? ['*'],
    keyId: (r.signature as { keyId?: string } | null)?.keyId ?? null,
    chunksPublished: r.chunksPublished,
    createdAt: r.createdAt,
    expiresAt: m.expiresAt ?? null,
  };
}

const platform = z.enum(AGENT_PLATFORMS);
const pushQuery = z.strictObject({ version: agentVersion.optional(), platform: platform.optional(), upgradeFrom: upgradeFromList.optional() });
const ARCHIVE_TYPES = ['application/octet-stream', 'application/gzip', 'application/x-gzip'];

/**
 * `/v1/agents` (issue 14): push a tarball from `apprentice agent build`, which the cloud checks, lists,
 * stores and signs as an agent release; list and show releases. Rolling one out goes through
 * `/v1/rollouts` like a model release.
 */
export function agentRoutes(ctx: ApiContext): Hono {
  const pushes = new Counter({ name: 'apprentice_cloud_agent_pushes_total', help: 'Agent tarball pushes by result: released, or the refusal code (payload_too_large, not_tar_gz, unsafe_entry, bad_agent_json, agent_mismatch, agent_exists, ...)', labelNames: ['result'] as const, registers: ctx.uploads.metrics ? [ctx.uploads.metrics] : [] });
  const max = Math.min(ctx.limits.maxUploadBytes, MAX_AGENT_BYTES);
  const tooLarge = (n: number): ApiError => new ApiError(413, 'payload_too_large', `the agent tarball exceeds ${n} bytes (api.maxUploadBytes, at most the protocol's ${MAX_AGENT_BYTES})`);
  const slots = uploadSlots(ctx);
  return new Hono()
    .post(
      '/',
      describeRoute({
        summary: 'Push an agent tarball (`apprentice agent build`) as a new signed agent release (body: application/octet-stream or application/gzip)',
        responses: {
          201: { description: 'the release', schema: agentReleaseSchema },
          400: { description: 'empty body or bad query (?upgradeFrom: versions separated by commas, or * alone)', schema: errorBodySchema },
          409: { description: 'this version and platform were already pushed', schema: errorBodySchema },
          413: { description: 'larger than api.maxUploadBytes', schema: errorBodySchema },
          415: { description: 'not application/octet-stream or application/gzip', schema: errorBodySchema },
          422: { description: 'not a tar.gz, an unsafe entry (absolute path, `..`, symlink, device file, setuid bit), no or bad agent.json, or agent.json disagrees with ?version / ?platform', schema: errorBodySchema },
          503: { description: 'api.maxConcurrentUploads uploads are already in progress', schema: errorBodySchema },
        },
      }),
      validate('query', pushQuery),
      async (c) => {
        const q = c.req.valid('query');
        if (slots.n >= ctx.limits.maxConcurrentUploads) {
          pushes.inc({ result: 'uploads_busy' });
          ctx.log.warn({ inFlight: slots.n }, 'cloud/api agent push refused: all upload slots busy');
          c.header('Retry-After', '10');
          throw new ApiError(503, 'uploads_busy', `${slots.n} uploads are in progress (api.maxConcurrentUploads); retry in 10 s`);
        }
        slots.n++;
        const tmpDir = join(ctx.artifactsDir, 'tmp');
        const tmp = join(tmpDir, `agent-${randomUUID()}.tar.gz`);
        try {
          const ct = c.req.header('content-type');
          if (!ARCHIVE_TYPES.includes(mediaType(ct) ?? '')) throw new ApiError(415, 'unsupported_media_type', `expected Content-Type: application/octet-stream or application/gzip (an agent tar.gz), got ${ct ?? 'none'}`);
          const length = c.req.header('content-length');
          if (length !== undefined && Number(length) > max) throw tooLarge(max);
          const body = c.req.raw.body;
          if (!body || length === '0') throw new ApiError(400, 'empty_body', 'the request body is empty; send the agent tar.gz');
          await mkdir(tmpDir, { recursive: true });
          const n = await streamToFile(body, tmp, max, tooLarge);
          if (n === 0) throw new ApiError(400, 'empty_body', 'the request body is empty; send the agent tar.gz');
          const row = await releaseAgent({ registry: ctx.registry, dataDir: ctx.artifactsDir, blobs: ctx.blobs, key: ctx.keys.active(), tarPath: tmp, expect: { version: q.version, platform: q.platform }, ...(q.upgradeFrom ? { upgradeFrom: q.upgradeFrom } : {}), publicBaseUrl: ctx.uploads.publicBaseUrl, now: ctx.clock() });
          pushes.inc({ result: 'released' });
          ctx.log.info({ agentSeq: row.agentSeq, version: row.version, platform: row.platform, sha256: row.sha256, bytes: row.bytes }, 'cloud/api agent pushed');
          await audit(ctx, c, { action: 'agent.push', target: `${row.version}/${row.platform}`, detail: { agentSeq: row.agentSeq, sha256: row.sha256, upgradeFrom: (row.manifest as { upgradeFrom?: string[] }).upgradeFrom } });
          return c.json(agentReleaseView(row), 201);
        } catch (err) {
          const e = err instanceof ArchiveRejectedError ? new ApiError(422, err.code, err.message, 'body')
            : err instanceof AgentMismatchError ? new ApiError(422, 'agent_mismatch', err.message, 'body')
            : err instanceof DuplicateAgentReleaseError ? new ApiError(409, 'agent_exists', err.message)
            : err;
          pushes.inc({ result: e instanceof ApiError ? e.code : 'error' });
          if (e instanceof ApiError) ctx.log.warn({ code: e.code, reason: e.message }, 'cloud/api agent push refused');
          throw e;
        } finally {
          slots.n--;
          await rm(tmp, { force: true });
        }
      },
    )
    .get(
      '/',
      describeRoute({ summary: 'Agent releases, newest first', responses: { 200: { description: 'releases', schema: z.object({ agents: z.array(agentReleaseSchema) }) } } }),
      validate('query', z.strictObject({ platform: platform.optional() })),
      async (c) => {
        const { platform: p } = c.req.valid('query');
        return c.json({ agents: (await listAgentReleases(ctx.registry, { platform: p })).map(agentReleaseView) });
      },
    )
    .get(
      '/:version/:platform',
      describeRoute({ summary: 'One agent release (its current, highest agentSeq) with the signed manifest', responses: { 200: { description: 'the release', schema: agentDetailSchema }, 404: { description: 'no such release', schema: errorBodySchema } } }),
      validate('param', z.strictObject({ version: agentVersion, platform })),
      async (c) => {
        const { version, platform: p } = c.req.valid('param');
        const row = await agentRelease(ctx.registry, version, p);
        if (!row) throw notFound(`agent ${version} for ${p}`, 'version');
        return c.json({ ...agentReleaseView(row), manifest: row.manifest as Record<string, unknown>, signature: row.signature as z.infer<typeof signatureSchema> });
      },
    );
}
