import { z } from 'zod';
import type { ApiContext } from './context.js';
import { ApiError, notFound } from './errors.js';
import type { ShadowViewLike } from './types.js';

/**
 * On-device shadow runs under `/v1/rollouts` (issue 13 item 4): the `shadow` option of a new rollout,
 * the view of a run (`GET /v1/rollouts/shadow-…`) and the figures shown on the rollout its switch started.
 */

/** A week at most: a shadow manifest expires with its window. */
export const MAX_SHADOW_MINUTES = 7 * 24 * 60;

export const shadowOptionSchema = z.strictObject({
  /** The window: devices run the candidate beside their model this long, then drop it unless switched. */
  minutes: z.number().int().min(1).max(MAX_SHADOW_MINUTES),
  /** Switch at the window's end when the gate passes (default true); else only `POST /v1/rollouts/{id}/switch`. */
  autoSwitch: z.boolean().optional(),
  /** The agreement gate: every device with ≥ minRequests shadowed examples agrees on ≥ minAgreement (default 0.95, 50). */
  minAgreement: z.number().min(0).max(1).optional(),
  minRequests: z.number().int().min(1).max(1_000_000).optional(),
});

const figuresSchema = z.strictObject({
  deviceId: z.string(),
  /** pending (not sent yet: on a cluster, until the leader's tick) → sent → running → dropped; incompatible (the device lacks `manifest.shadow`). */
  state: z.string(),
  reason: z.string().nullable(),
  requests: z.number().int(),
  agreements: z.number().int(),
  /** agreements / requests, or null before any shadowed example. */
  agreement: z.number().nullable(),
  skipped: z.number().int(),
  latencyMs: z.strictObject({ p50: z.number().nullable(), p95: z.number().nullable() }),
  reportedAt: z.string().nullable(),
  /** The switch gate's verdict for the device: pass | fail | no_evidence (or null when not judged). */
  verdict: z.string().nullable(),
  /** Why: the teacher-labelled figures (or why there are none), a refusal's reason. */
  detail: z.string().nullable(),
});

export const shadowDetailSchema = z.strictObject({
  id: z.string(),
  kind: z.literal('shadow'),
  model: z.string(),
  /** The candidate release. */
  release: z.number().int(),
  /** The sequence of the signed shadow manifest the devices got. */
  shadowRelease: z.number().int(),
  until: z.string(),
  /**
   * shadowing → switched | expired | aborted. On a cluster (issue 15) an operator's switch or abort is first
   * `switching` / `aborting`: recorded by whichever replica took the call, carried out by the leader.
   */
  state: z.string(),
  reason: z.string().nullable(),
  autoSwitch: z.boolean(),
  minAgreement: z.number(),
  minRequests: z.number().int(),
  /** After the switch: the re-issued release and the rollout it started. */
  switchedRelease: z.number().int().nullable(),
  rolloutId: z.string().nullable(),
  /** What the switch gate answers on the figures so far. */
  gate: z.strictObject({ switch: z.boolean(), reason: z.string() }),
  devices: z.array(figuresSchema),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export type ShadowDetail = z.infer<typeof shadowDetailSchema>;

export function shadowDetail(v: ShadowViewLike): ShadowDetail {
  const r = v.run;
  const verdicts = new Map(v.decision.devices.map((d) => [d.deviceId, d]));
  return {
    id: r.id,
    kind: 'shadow',
    model: r.model,
    release: r.releaseSeq,
    shadowRelease: r.shadowSeq,
    until: r.until,
    state: r.state,
    reason: r.reason,
    autoSwitch: r.autoSwitch,
    minAgreement: r.minAgreement,
    minRequests: r.minRequests,
    switchedRelease: r.switchedSeq,
    rolloutId: r.rolloutId,
    gate: { switch: v.decision.switch, reason: v.decision.reason },
    devices: v.devices.map((d) => ({
      deviceId: d.deviceId,
      state: d.state,
      reason: d.reason,
      requests: d.requests,
      agreements: d.agreements,
      agreement: d.requests > 0 ? d.agreements / d.requests : null,
      skipped: d.skipped,
      latencyMs: { p50: d.latencyP50Ms, p95: d.latencyP95Ms },
      reportedAt: d.reportedAt,
      verdict: verdicts.get(d.deviceId)?.verdict ?? null,
      detail: verdicts.get(d.deviceId)?.detail ?? null,
    })),
    createdAt: r.createdAt,
    updatedAt: r.updatedAt,
  };
}

/** A switch or abort recorded but not carried out yet (a cluster's leader does it): the API answers 202. */
export const shadowAccepted = (d: ShadowDetail): boolean => d.state === 'switching' || d.state === 'aborting';

/** Shadow run ids (`shadow-…`, cloud/shadow) never collide with rollout ids. */
export const isShadowId = (id: string): boolean => id.startsWith('shadow-');

export function shadowService(ctx: ApiContext): NonNullable<ApiContext['shadow']> {
  if (!ctx.shadow) throw new ApiError(422, 'invalid_rollout', 'on-device shadow mode is not enabled on this cloud', 'shadow');
  return ctx.shadow;
}

export async function shadowDetailOf(ctx: ApiContext, id: string): Promise<ShadowDetail> {
  const v = await ctx.shadow?.get(id);
  if (!v) throw notFound(`rollout ${id}`, 'id', 'rollout_not_found');
  return shadowDetail(v);
}
