import { sql } from 'drizzle-orm';
import { Hono, type Context, type NotFoundHandler } from 'hono';
import { z } from 'zod';
import { silentLogger } from '../../shared/log/index.js';
import { DEFAULT_LIMITS, type ApiContext } from './context.js';
import { AGENT_UPLOAD_PATH, agentRoutes } from './agents.js';
import { auditRoutes } from './audit.js';
import { Counter, Registry as PromRegistry } from 'prom-client';
import { publishKeySet, readPublishedKeySet } from '../keys/keyset-file.js';
import { fileArtifactStore } from './artifact-store.js';
import { ARTIFACTS_PREFIX, artifactRoutes, socketAddress } from './artifacts.js';
import { deviceRoutes } from './devices.js';
import { fleetRoutes } from './fleet.js';
import { ApiError, errorBody, errorBodySchema, onApiError } from './errors.js';
import { exampleRoutes } from './examples.js';
import { quarantineRoutes } from './quarantine.js';
import { keyRoutes } from './keys.js';
import { bearerAuth, describeRoute, limitBody } from './middleware.js';
import { modelRoutes } from './models.js';
import { buildOpenApi, openApiPath } from './openapi.js';
import { releaseRoutes } from './releases.js';
import { rolloutRoutes } from './rollouts.js';
import { roundRoutes } from './rounds.js';
import type { CloudApiDeps } from './types.js';
import { createConsole } from '../ui/app.js';
import { registryConsoleData } from '../ui/registry-data.js';
import { UPLOAD_PATH, uploadRoutes } from './uploads.js';

/** Shortest admin token accepted: a guessable token would be the whole fleet's weakest point. */
export const MIN_ADMIN_TOKEN_LENGTH = 16;
const PUBLIC_PATHS = ['/healthz', '/openapi.json'] as const;

const isConsolePath = (p: string): boolean => p === '/ui' || p.startsWith('/ui/');

/** Hono path pattern → RegExp, to tell 405 (path exists, other method) from 404. */
function pathRegExp(path: string): RegExp {
  const src = path
    .split('/')
    .map((seg) => (seg.startsWith(':') ? '[^/]+' : seg === '*' ? '.*' : seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
    .join('/');
  return new RegExp(`^${src}/?$`);
}

/**
 * The cloud's admin HTTP API. One Hono app per resource (devices, models, rounds, releases, rollouts,
 * examples, keys), mounted here behind bearer auth (all but /healthz and /openapi.json) and a body limit;
 * one error shape `{ error: { code, message, field? } }` for every failure, 404 and 405 included.
 * Test with `app.request()`; serve with `startCloudServer`.
 *
 * @example
 * const app = createCloudApi({ registry, keys, adminToken, broker: { publicUrl: 'mqtts://broker.example.com:8883' }, rounds, rollouts, fleet, artifactsDir });
 * const server = await startCloudServer({ app, port: 8787 });
 */
export function createCloudApi(deps: CloudApiDeps): Hono {
  if (deps.adminToken.length < MIN_ADMIN_TOKEN_LENGTH) throw new Error(`cloud API: adminToken must be at least ${MIN_ADMIN_TOKEN_LENGTH} characters`);
  const log = deps.log ?? silentLogger;
  const promReg = deps.uploads?.metrics ?? new PromRegistry();
  const artifactRefusals =
    (promReg.getSingleMetric('apprentice_cloud_artifact_refused_total') as Counter<'reason'> | undefined) ??
    new Counter({ name: 'apprentice_cloud_artifact_refused_total', help: 'GET /v1/artifacts requests refused, by reason (insecure_transport, unauthorized)', labelNames: ['reason'] as const, registers: [promReg] });
  const counter = <L extends string>(name: string, help: string, labelNames: readonly L[]): Counter<L> =>
    (promReg.getSingleMetric(name) as Counter<L> | undefined) ?? new Counter({ name, help, labelNames, registers: [promReg] });
  const consoleRefusals = counter('apprentice_console_refused_total', 'Console requests refused, by reason (no_session, bad_csrf, bad_token, rate_limited; login_table_full: the login limit forgot an address)', ['reason'] as const);
  const apiRefusals = counter('apprentice_cloud_api_refused_total', "Admin API requests refused because of the cloud's own state, by reason (registry_busy: the registry's write lock was held past its busy timeout; registry_unavailable: PostgreSQL unreachable or contended past its retries; 503 + Retry-After)", ['reason'] as const);
  const auditFailures = counter('apprentice_audit_write_failed_total', 'Audit entries that could not be written (the action itself went ahead), by source (api, console)', ['source'] as const);
  const trustedProxies = deps.artifacts?.trustedProxies ?? [];
  const clientAddress = deps.artifacts?.clientAddress ?? socketAddress;
  /** The console's client for its login limit: the socket peer, or the first X-Forwarded-For hop when the peer is a trusted proxy. */
  const consoleClient = (c: Context): string | undefined => {
    const peer = clientAddress(c);
    const fwd = c.req.header('x-forwarded-for')?.split(',')[0]?.trim();
    return peer !== undefined && trustedProxies.includes(peer) && fwd ? fwd : peer;
  };
  const ctx: ApiContext = {
    registry: deps.registry,
    keys: deps.keys,
    broker: deps.broker,
    rounds: deps.rounds,
    rollouts: deps.rollouts,
    shadow: deps.shadow,
    fleet: deps.fleet,
    artifactsDir: deps.artifactsDir,
    blobs: deps.artifacts?.blobs,
    artifacts: {
      store: deps.artifacts?.store ?? fileArtifactStore({ registry: deps.registry, artifactsDir: deps.artifactsDir, log }),
      adminToken: deps.adminToken,
      trustedProxies,
      clientAddress,
      refused: (reason) => artifactRefusals.inc({ reason }),
    },
    trust: {
      published: () => readPublishedKeySet(deps.trustDir ?? deps.artifactsDir),
      publish: (signed) => {
        if (deps.sharedKeys) {
          const dir = deps.trustDir ?? deps.artifactsDir;
          throw new ApiError(409, 'keyset_shared', `the key set is shared by every replica (keys.sharedDir ${dir}): publish it on an admin host with \`apprentice keys publish-keyset --keys-dir ${dir} --in signed.json\`; replicas retain it within seconds`, 'keyset');
        }
        const { verdict, path } = publishKeySet(deps.trustDir ?? deps.artifactsDir, signed, deps.keys.active());
        deps.onKeySetPublished?.();
        return { version: verdict.signed.keyset.version, path };
      },
    },
    ingestCounts: deps.ingestCounts ?? (() => ({})),
    limits: { ...DEFAULT_LIMITS, ...deps.limits },
    uploads: deps.uploads ?? {},
    retention: deps.retention,
    clock: deps.clock ?? (() => new Date()),
    auditFailed: () => auditFailures.inc({ source: 'api' }),
    log,
  };
  const started = Date.now();
  let openapi: Record<string, unknown> | undefined;

  const app = new Hono();
  // /v1/artifacts/* checks its own credentials (device Basic or the admin token).
  const bearer = bearerAuth({ token: deps.adminToken, exempt: PUBLIC_PATHS, exemptPrefixes: [ARTIFACTS_PREFIX] });
  // The console (/ui/, issue 12) has its own login: a session cookie, not the bearer token.
  app.use((c, next) => (isConsolePath(c.req.path) ? next() : bearer(c, next)));
  // The console calls this API in process (app.request) and names its session as the audit actor in the
  // request's env, which no HTTP client can set (node-server's env is its socket objects).
  app.use((c, next) => {
    const actor = (c.env as { consoleActor?: unknown } | undefined)?.consoleActor;
    if (typeof actor === 'string') c.set('auditActor', actor);
    return next();
  });
  // The console's cached aggregates (fleet summary, 2 s) are dropped after every successful change made
  // through the API (console, CLI or curl); ingest's own writes only age them out.
  const consoleData = deps.console === false ? undefined : registryConsoleData(deps.registry, { summaryTtlMs: deps.console?.summaryTtlMs });
  if (consoleData) {
    app.use('/v1/*', async (c, next) => {
      await next();
      if (c.req.method !== 'GET' && c.req.method !== 'HEAD' && c.res.status < 400) consoleData.invalidate();
    });
  }
  const jsonLimit = limitBody({ maxBytes: ctx.limits.maxBodyBytes });
  // The ONNX upload and the agent push stream to disk under its own limit (api.maxUploadBytes); everything else is JSON-sized.
  app.use((c, next) => (c.req.method === 'POST' && (UPLOAD_PATH.test(c.req.path) || AGENT_UPLOAD_PATH.test(c.req.path)) ? next() : jsonLimit(c, next)));
  app.get(
    '/healthz',
    describeRoute({
      summary: "Liveness: the process answers and the registry can be read; this replica's cluster role and leader epoch",
      public: true,
      responses: {
        200: {
          description: 'ok; `role` is `single` without a cluster, else `leader` or `follower` (`stopped` while shutting down); `epoch` is the leader epoch this replica leads with (null unless leader)',
          schema: z.object({ status: z.literal('ok'), uptimeSeconds: z.number(), role: z.enum(['single', 'leader', 'follower', 'stopped']), epoch: z.number().int().nullable() }),
        },
        503: { description: 'the registry cannot be read', schema: errorBodySchema },
      },
    }),
    async (c) => {
      try {
        // A real read on either dialect (SQLite or PostgreSQL); on PostgreSQL it also takes a pool connection.
        await ctx.registry.q.select({ one: sql<number>`1` }).from(ctx.registry.t.meta).limit(1);
      } catch (err) {
        log.error({ err }, 'cloud/api healthz: registry unavailable');
        throw new ApiError(503, 'unavailable', 'registry unavailable');
      }
      const { role, epoch } = deps.replicaRole?.() ?? { role: 'single' as const, epoch: null };
      return c.json({ status: 'ok' as const, uptimeSeconds: Math.round((Date.now() - started) / 1000), role, epoch });
    },
  );
  app.get('/openapi.json', describeRoute({ summary: 'This OpenAPI 3.1 document', public: true, responses: { 200: { description: 'the document' } } }), (c) => c.json((openapi ??= buildOpenApi(app))));
  app.get(
    '/metrics',
    describeRoute({ summary: "The cloud's Prometheus metrics (prom-client text format): ingest, uploads, artifacts, the rollout engine's CPU and events, the Node process", responses: { 200: { description: 'Prometheus text exposition' } } }),
    async (c) => c.body(await promReg.metrics(), 200, { 'content-type': promReg.contentType }),
  );
  app.route('/v1/devices', deviceRoutes(ctx));
  app.route('/v1/models', uploadRoutes(ctx));
  app.route('/v1/models', modelRoutes(ctx));
  app.route('/v1', roundRoutes(ctx));
  app.route('/v1/releases', releaseRoutes(ctx));
  app.route('/v1/agents', agentRoutes(ctx));
  app.route('/v1/rollouts', rolloutRoutes(ctx));
  app.route('/v1/examples/quarantine', quarantineRoutes(ctx));
  app.route('/v1/examples', exampleRoutes(ctx));
  app.route('/v1/keys', keyRoutes(ctx));
  app.route('/v1/fleet', fleetRoutes(ctx));
  app.route('/v1/audit', auditRoutes(ctx));
  if (consoleData && deps.console !== false) {
    // Forwarded, not app.route(): the console is HTML behind its own session, outside the OpenAPI document.
    const ui = createConsole({ api: app, adminToken: deps.adminToken, registry: deps.registry, data: consoleData, dataDir: deps.artifactsDir,
      log,
      onRefused: (reason) => consoleRefusals.inc({ reason }),
      onAuditFailed: () => auditFailures.inc({ source: 'console' }),
      clientAddress: consoleClient,
      ...deps.console,
    }).app;
    app.all('/ui', (c) => ui.fetch(c.req.raw, c.env));
    app.all('/ui/*', (c) => ui.fetch(c.req.raw, c.env));
  }
  app.route('/v1/artifacts', artifactRoutes(ctx));

  let routes: { method: string; re: RegExp }[] | undefined;
  const notFoundOr405: NotFoundHandler = (c) => {
    routes ??= app.routes.filter((r) => r.method !== 'ALL' && !r.path.includes('*')).map((r) => ({ method: r.method, re: pathRegExp(r.path) }));
    const allowed = [...new Set(routes.filter((r) => r.re.test(c.req.path)).map((r) => r.method))];
    if (allowed.length) {
      if (allowed.includes('GET')) allowed.push('HEAD');
      c.header('Allow', allowed.join(', '));
      return c.json(errorBody('method_not_allowed', `${c.req.method} is not allowed on ${openApiPath(c.req.path)}; use ${allowed.join(', ')}`), 405);
    }
    return c.json(errorBody('not_found', `no route for ${c.req.method} ${c.req.path}`), 404);
  };
  app.notFound(notFoundOr405);
  app.onError(onApiError({ log, refused: apiRefusals }));
  return app;
}
