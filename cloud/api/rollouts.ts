import { and, eq, inArray } from 'drizzle-orm';
import { Hono } from 'hono';
import { z } from 'zod';
import { AGENT_PLATFORMS } from '../../shared/protocol/agent.js';
import { agentVersion, releaseSeq } from '../../shared/protocol/schemas.js';
import { agentRelease } from '../agents/store.js';
import type { RolloutView } from '../rollouts/engine.js';
import { rolloutShadowView } from '../rollouts/agreement.js';
import { ROLLOUT_STATES, wavesOf } from '../rollouts/policy.js';
import type { RolloutRow } from '../registry/schema.js';
import { audit } from './audit.js';
import type { ApiContext } from './context.js';
import { ApiError, errorBodySchema, notFound } from './errors.js';
import { describeRoute, validate } from './middleware.js';
import { modelName, rolloutPolicyFields, rolloutTargetSchema, rolloutWaveFields } from './schemas.js';
import type { RolloutTarget } from './types.js';
import { isShadowId, shadowAccepted, shadowDetail, shadowDetailOf, shadowDetailSchema, shadowOptionSchema, shadowService } from './rollouts-shadow.js';

export const createRolloutBodySchema = z
  .strictObject({
    /** A model release: `model` and `release`. */
    model: modelName.optional(),
    release: releaseSeq.optional(),
    /** Or an agent release (issue 14): its version and platform (the current, highest agentSeq of it). */
    agent: z.strictObject({ version: agentVersion, platform: z.enum(AGENT_PLATFORMS) }).optional(),
    target: rolloutTargetSchema,
    ...rolloutPolicyFields,
    ...rolloutWaveFields,
    /** On-device shadow mode first (issue 13 item 4): the rollout with this policy starts at the switch. */
    shadow: shadowOptionSchema.optional(),
  })
  .superRefine((b, ctx) => {
    if (b.agent !== undefined && (b.model !== undefined || b.release !== undefined)) ctx.addIssue({ code: 'custom', path: ['agent'], message: 'give either model and release, or agent, not both' });
    if (b.agent === undefined && (b.model === undefined || b.release === undefined)) ctx.addIssue({ code: 'custom', path: [b.model === undefined ? 'model' : 'release'], message: 'give model and release (a model rollout), or agent {version, platform}' });
    // `canaryShare: s` is `waves: [s, 1]`; both at once would be ambiguous (issue 8).
    if (b.waves !== undefined && b.canaryShare !== undefined) ctx.addIssue({ code: 'custom', path: ['canaryShare'], message: 'give either waves or canaryShare, not both' });
  });

export const rolloutSchema = z.strictObject({
  id: z.string(),
  /** The model, or `agent:<platform>` for an agent rollout (issue 14). */
  model: z.string(),
  /** `model` or `agent`; for `agent`, release and rollbackRelease are agentSeqs. */
  kind: z.enum(['model', 'agent']),
  release: z.number().int(),
  target: z.union([z.strictObject({ kind: z.literal('all') }), z.strictObject({ kind: z.literal('group'), group: z.string() }), z.strictObject({ kind: z.literal('devices'), ids: z.array(z.string()) })]),
  canaryShare: z.number(),
  waves: z.array(z.number()),
  /** Index of the wave in progress (0: canaries). */
  wave: z.number().int(),
  soakSeconds: z.number().int(),
  failureThreshold: z.number(),
  minFailures: z.number().int(),
  deviceTimeoutSeconds: z.number().int(),
  canaryGraceSeconds: z.number().int(),
  /** Agreement gate margin (issue 13): held back when the upper bound of candidate − running accuracy < −margin. */
  agreementMargin: z.number(),
  /** pending → canary → fleet → completed | superseded; aborted; rolling_back → rolled_back */
  state: z.enum(ROLLOUT_STATES),
  reason: z.string().nullable(),
  paused: z.boolean(),
  pauseReason: z.string().nullable(),
  securityAlert: z.string().nullable(),
  replacements: z.number().int(),
  rollbackRelease: z.number().int().nullable(),
  canaryStartedAt: z.string().nullable(),
  canaryHealthySince: z.string().nullable(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
const nnum = z.number().nullable();
export const shadowDeviceSchema = z.strictObject({
  evidence: z.enum(['device', 'cohort', 'none']),
  hold: z.boolean(),
  reason: z.string(),
  samples: z.number().int().nullable(),
  candidateAccuracy: nnum,
  runningAccuracy: nnum,
  agreement: nnum,
  delta: nnum,
  deltaLow: nnum,
  deltaHigh: nnum,
});
export const rolloutDetailSchema = rolloutSchema.extend({
  /** Devices per state: waiting → desired → installed | failed | quarantined | timed_out | superseded | held_back | incompatible. */
  counts: z.record(z.string(), z.number().int()),
  waveProgress: z.array(z.strictObject({ share: z.number(), counts: z.record(z.string(), z.number().int()) })),
  /** Of the target's devices seen since the rollout started, the share running the release. */
  coverage: z.strictObject({ connected: z.number().int(), running: z.number().int(), share: z.number().nullable() }),
  devices: z.array(
    z.strictObject({ deviceId: z.string(), canary: z.boolean(), wave: z.number().int(), state: z.string(), reason: z.string().nullable(), installedAt: z.string().nullable(), supersededBy: z.string().nullable(), updatedAt: z.string() }),
  ),
  /**
   * Per device: its shadow figures for this release (issue 13) — evidence `device` (its own audit
   * traffic), `cohort` (too few samples: its cohort's), or `none` ("no evidence": gate skipped).
   */
  evidence: z.record(z.string(), shadowDeviceSchema),
  /** The transition log, newest first (at most 100). */
  transitions: z.array(z.strictObject({ at: z.string(), deviceId: z.string().nullable(), from: z.string().nullable(), to: z.string(), reason: z.string().nullable() })),
  /** When this rollout is the switch of an on-device shadow run: that run and its per-device figures. */
  shadow: shadowDetailSchema.optional(),
});

function view(r: RolloutRow): z.infer<typeof rolloutSchema> {
  return {
    id: r.id,
    model: r.model,
    kind: r.kind,
    release: r.releaseSeq,
    target: r.target as RolloutTarget,
    canaryShare: r.canaryShare,
    waves: wavesOf(r),
    wave: r.wave,
    soakSeconds: r.soakSeconds,
    failureThreshold: r.failureThreshold,
    minFailures: r.minFailures,
    deviceTimeoutSeconds: r.deviceTimeoutSeconds,
    canaryGraceSeconds: r.canaryGraceSeconds,
    agreementMargin: r.agreementMargin,
    state: r.state as (typeof ROLLOUT_STATES)[number],
    reason: r.reason,
    paused: r.pausedAt !== null,
    pauseReason: r.pauseReason,
    securityAlert: r.securityAlert,
    replacements: r.replacements,
    rollbackRelease: r.rollbackSeq,
    canaryStartedAt: r.canaryStartedAt,
    canaryHealthySince: r.canaryHealthySince,
    createdAt: r.createdAt,
    updatedAt: r.updatedAt,
  };
}

const idParam = z.strictObject({ id: z.string().min(1).max(128) });
const notFoundDoc = { 404: { description: 'no such rollout', schema: errorBodySchema } };
const conflictDoc = { 409: { description: 'the rollout has finished (rollout_conflict)', schema: errorBodySchema } };
const pauseConflictDoc = { 409: { description: 'the rollout has finished, or is already paused / not paused (rollout_conflict)', schema: errorBodySchema } };
const invalid = (message: string, field: string) => new ApiError(422, 'invalid_rollout', message, field);

/**
 * `/v1/rollouts`: the API checks what it can answer precisely (model, release, device ids) and hands the
 * rest to the RolloutEngine (cloud/rollouts), whose typed errors become 404/409/422.
 */
export function rolloutRoutes(ctx: ApiContext): Hono {
  const detail = async (id: string): Promise<z.infer<typeof rolloutDetailSchema>> => {
    const got = await ctx.rollouts.get(id);
    if (!got) throw notFound(`rollout ${id}`, 'id', 'rollout_not_found');
    const row = 'rollout' in got ? got.rollout : got;
    const v = 'coverage' in got ? (got as RolloutView) : undefined;
    const shadow = await ctx.shadow?.forRollout(id);
    const { rolloutDevices } = ctx.registry.t;
    const devs = v?.devices ?? (await ctx.registry.q.select().from(rolloutDevices).where(eq(rolloutDevices.rolloutId, id)));
    const counts: Record<string, number> = {};
    for (const d of devs) counts[d.state] = (counts[d.state] ?? 0) + 1;
    return {
      ...view(row),
      counts,
      waveProgress: v?.waves.map((w) => ({ share: w.share, counts: w.counts as Record<string, number> })) ?? [],
      coverage: v?.coverage ?? { connected: 0, running: 0, share: null },
      evidence: await rolloutShadowView(ctx.registry, row, devs),
      devices: devs.map((d) => ({ deviceId: d.deviceId, canary: d.canary, wave: d.wave, state: d.state, reason: d.reason, installedAt: d.installedAt, supersededBy: d.supersededBy, updatedAt: d.updatedAt })),
      transitions: (v?.transitions ?? []).map((t) => ({ at: t.at, deviceId: t.deviceId, from: t.fromState, to: t.toState, reason: t.reason })),
      ...(shadow ? { shadow: shadowDetail(shadow) } : {}),
    };
  };

  return new Hono()
    .post(
      '/',
      describeRoute({
        summary: 'Start a rollout in waves (the first wave is the canaries), each soaked and checked before the next',
        responses: {
          201: { description: 'the rollout; with `shadow`, the shadow run (kind "shadow") whose switch starts the rollout (on a cluster its devices stay `pending` until the leader sends, within a tick)', schema: z.union([rolloutSchema, shadowDetailSchema]) },
          400: { description: 'invalid body', schema: errorBodySchema },
          409: { description: 'conflicts with another rollout (rollout_conflict)', schema: errorBodySchema },
          422: { description: 'unknown model, release or devices, or a target the engine cannot serve (invalid_rollout)', schema: errorBodySchema },
        },
      }),
      validate('json', createRolloutBodySchema),
      async (c) => {
        const body = c.req.valid('json');
        let what: { model: string; releaseSeq: number; kind: 'model' | 'agent' };
        if (body.agent) {
          const a = await agentRelease(ctx.registry, body.agent.version, body.agent.platform);
          if (!a) throw invalid(`unknown agent release ${body.agent.version} for ${body.agent.platform} (push it first: apprentice agent push)`, 'agent');
          what = { model: `agent:${a.platform}`, releaseSeq: a.agentSeq, kind: 'agent' };
        } else {
          const model = body.model!;
          const { q, t } = ctx.registry;
          if (!(await q.select({ n: t.models.name }).from(t.models).where(eq(t.models.name, model)).limit(1)).length) throw invalid(`unknown model ${model}`, 'model');
          const [rel] = await q.select({ model: t.releases.model }).from(t.releases).where(eq(t.releases.seq, body.release!)).limit(1);
          if (!rel) throw invalid(`unknown release ${body.release}`, 'release');
          if (rel.model !== model) throw invalid(`release ${body.release} belongs to model ${rel.model}, not ${model}`, 'release');
          what = { model, releaseSeq: body.release!, kind: 'model' };
        }
        if (body.target.kind === 'devices') {
          const ids = body.target.ids;
          const { devices } = ctx.registry.t;
          const found = new Set((await ctx.registry.q.select({ id: devices.id }).from(devices).where(and(inArray(devices.id, ids), eq(devices.revoked, false)))).map((d) => d.id));
          const missing = ids.filter((id) => !found.has(id));
          if (missing.length) throw invalid(`unknown or revoked device(s): ${missing.slice(0, 10).join(', ')}${missing.length > 10 ? ', ...' : ''}`, 'target.devices');
        }
        const { model: _m, release: _r, agent, target, shadow, ...policy } = body;
        if (shadow) {
          if (what.kind !== 'model') throw invalid('on-device shadow mode is for model releases, not agent releases', 'shadow');
          const run = await shadowService(ctx).create({ model: what.model, releaseSeq: what.releaseSeq, target, policy, ...shadow });
          ctx.log.info({ shadow: run.id, model: what.model, release: what.releaseSeq, minutes: shadow.minutes }, 'shadow run created');
          await audit(ctx, c, { action: 'rollout.shadow', target: run.id, detail: { model: what.model, release: what.releaseSeq, target, shadow, ...policy } });
          c.header('Location', `/v1/rollouts/${run.id}`);
          return c.json(await shadowDetailOf(ctx, run.id), 201);
        }
        const row = await ctx.rollouts.create({ ...what, target, ...policy });
        ctx.log.info({ rollout: row.id, model: what.model, kind: what.kind, release: what.releaseSeq }, 'rollout created');
        await audit(ctx, c, { action: 'rollout.create', target: row.id, detail: { model: what.model, release: what.releaseSeq, ...(agent ? { agent } : {}), target, ...policy } });
        c.header('Location', `/v1/rollouts/${row.id}`);
        return c.json(view(row), 201);
      },
    )
    .get(
      '/',
      describeRoute({ summary: 'List rollouts, newest first', responses: { 200: { description: 'rollouts', schema: z.object({ rollouts: z.array(rolloutSchema) }) } } }),
      validate('query', z.strictObject({ model: modelName.optional(), state: z.enum(ROLLOUT_STATES).optional() })),
      async (c) => {
        const { model, state } = c.req.valid('query');
        const rows = (await ctx.rollouts.list()).filter((r) => (model === undefined || r.model === model) && (state === undefined || r.state === state));
        return c.json({ rollouts: rows.map(view) });
      },
    )
    .get(
      '/:id',
      describeRoute({ summary: 'One rollout with per-device progress (a shadow run: its per-device agreement and latency)', responses: { 200: { description: 'the rollout, or the shadow run', schema: z.union([rolloutDetailSchema, shadowDetailSchema]) }, ...notFoundDoc } }),
      validate('param', idParam),
      async (c) => {
        const { id } = c.req.valid('param');
        return c.json(isShadowId(id) ? await shadowDetailOf(ctx, id) : await detail(id));
      },
    )
    .post(
      '/:id/switch',
      describeRoute({
        summary: "Switch a shadow run now: re-issue the candidate's bytes at a new sequence and start its rollout",
        responses: {
          200: { description: 'the shadow run, switched', schema: shadowDetailSchema },
          202: { description: 'on a cluster (issue 15): the switch is recorded (state `switching`) and the leader carries it out within a tick; poll the run', schema: shadowDetailSchema },
          ...notFoundDoc,
          409: { description: 'the run is no longer shadowing (rollout_conflict)', schema: errorBodySchema } },
      }),
      validate('param', idParam),
      validate('json', z.strictObject({ reason: z.string().min(1).max(512).default('switched by operator') }), { optional: true }),
      async (c) => {
        const { id } = c.req.valid('param');
        if (!isShadowId(id)) throw new ApiError(409, 'rollout_conflict', `rollout ${id} is not a shadow run`);
        await shadowDetailOf(ctx, id);
        await shadowService(ctx).switch(id, c.req.valid('json').reason);
        await audit(ctx, c, { action: 'rollout.switch', target: id, detail: { reason: c.req.valid('json').reason } });
        const run = await shadowDetailOf(ctx, id);
        return c.json(run, shadowAccepted(run) ? 202 : 200);
      },
    )
    .post(
      '/:id/abort',
      describeRoute({
        summary: 'Abort a rollout (devices keep what they run; see rollback), or end a shadow run with no switch',
        responses: {
          200: { description: 'the rollout, or the shadow run', schema: z.union([rolloutDetailSchema, shadowDetailSchema]) },
          202: { description: 'a shadow run on a cluster (issue 15): the abort is recorded (state `aborting`) and the leader carries it out within a tick', schema: shadowDetailSchema },
          ...notFoundDoc,
          ...conflictDoc,
        },
      }),
      validate('param', idParam),
      validate('json', z.strictObject({ reason: z.string().min(1).max(512).default('aborted by operator') }), { optional: true }),
      async (c) => {
        const { id } = c.req.valid('param');
        if (isShadowId(id)) {
          await shadowDetailOf(ctx, id);
          await shadowService(ctx).abort(id, c.req.valid('json').reason);
          await audit(ctx, c, { action: 'rollout.abort', target: id, detail: { reason: c.req.valid('json').reason } });
          const run = await shadowDetailOf(ctx, id);
          return c.json(run, shadowAccepted(run) ? 202 : 200);
        }
        await detail(id);
        await ctx.rollouts.abort(id, c.req.valid('json').reason);
        ctx.log.info({ rollout: id }, 'rollout aborted');
        await audit(ctx, c, { action: 'rollout.abort', target: id, detail: { reason: c.req.valid('json').reason } });
        return c.json(await detail(id));
      },
    )
    .post(
      '/:id/pause',
      describeRoute({ summary: 'Pause a rollout: no new wave, no canary replacement, device timeouts stop', responses: { 200: { description: 'the rollout', schema: rolloutDetailSchema }, ...notFoundDoc, ...pauseConflictDoc } }),
      validate('param', idParam),
      validate('json', z.strictObject({ reason: z.string().min(1).max(512).default('paused by operator') }), { optional: true }),
      async (c) => {
        const { id } = c.req.valid('param');
        await detail(id);
        await ctx.rollouts.pause(id, c.req.valid('json').reason);
        ctx.log.info({ rollout: id }, 'rollout paused');
        await audit(ctx, c, { action: 'rollout.pause', target: id, detail: { reason: c.req.valid('json').reason } });
        return c.json(await detail(id));
      },
    )
    .post(
      '/:id/resume',
      describeRoute({ summary: 'Resume a paused rollout (device deadlines move forward by the paused time)', responses: { 200: { description: 'the rollout', schema: rolloutDetailSchema }, ...notFoundDoc, ...pauseConflictDoc } }),
      validate('param', idParam),
      validate('json', z.strictObject({}), { optional: true }),
      async (c) => {
        const { id } = c.req.valid('param');
        await detail(id);
        await ctx.rollouts.resume(id);
        ctx.log.info({ rollout: id }, 'rollout resumed');
        await audit(ctx, c, { action: 'rollout.resume', target: id });
        return c.json(await detail(id));
      },
    )
    .post(
      '/:id/rollback',
      describeRoute({ summary: "Roll a rollout's devices back to the previous release", responses: { 200: { description: 'the rollout', schema: rolloutDetailSchema }, ...notFoundDoc, ...conflictDoc } }),
      validate('param', idParam),
      validate('json', z.strictObject({}), { optional: true }),
      async (c) => {
        const { id } = c.req.valid('param');
        await detail(id);
        await ctx.rollouts.rollback(id);
        ctx.log.info({ rollout: id }, 'rollout rolled back');
        await audit(ctx, c, { action: 'rollout.rollback', target: id });
        return c.json(await detail(id));
      },
    );
}
