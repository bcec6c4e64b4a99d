import { createHash } from 'node:crypto';
import { z } from 'zod';
import { deviceId as deviceIdSchema, releaseSeq, type DeviceEvent, type REJECT_REASONS } from '../../shared/protocol/index.js';
import type { DeviceRow } from '../registry/schema.js';

type RejectReason = (typeof REJECT_REASONS)[number];

/** Rollout policy: the states as stored in `rollouts.state` / `rollout_devices.state`, the request, and canary choice. */

/**
 * pending → canary (wave 0) → fleet (later waves) → completed; superseded when a newer rollout took
 * over every device; aborted (operator); rolling_back → rolled_back (failure threshold or operator).
 * `rolling_back` is persisted so a restart in the middle of a re-issue finishes it. A pause is not a
 * state: `paused_at` stops an active rollout where it is and `resume` continues from there.
 */
export const ROLLOUT_STATES = ['pending', 'canary', 'fleet', 'rolling_back', 'completed', 'aborted', 'rolled_back', 'superseded'] as const;
export type RolloutState = (typeof ROLLOUT_STATES)[number];
export const ACTIVE_ROLLOUT_STATES = ['pending', 'canary', 'fleet', 'rolling_back'] as const satisfies readonly RolloutState[];

/**
 * waiting (not given the release) → desired (retained desired published) → one terminal state.
 * `failed` is a counted failure the engine has not yet acted on (quarantine below the threshold); it stays
 * `failed` when the rollout rolls back. `held_back`: the agreement gate kept the device on its release
 * (issue 13, agreement.ts); terminal, counts toward neither side.
 */
export const ROLLOUT_DEVICE_STATES = ['waiting', 'desired', 'installed', 'failed', 'quarantined', 'timed_out', 'superseded', 'held_back', 'incompatible'] as const;
export type RolloutDeviceState = (typeof ROLLOUT_DEVICE_STATES)[number];
export const PENDING_DEVICE_STATES = ['waiting', 'desired'] as const satisfies readonly RolloutDeviceState[];
export const TERMINAL_DEVICE_STATES = ROLLOUT_DEVICE_STATES.filter((s) => s !== 'waiting' && s !== 'desired');
/** What the failure threshold counts (the other terminal states count toward neither side). */
export const FAILED_DEVICE_STATES = ['failed', 'quarantined'] as const satisfies readonly RolloutDeviceState[];

/**
 * What a device's `rejected` reason means for a rollout (issue 8). A reason added to REJECT_REASONS
 * fails to compile here until it is classified.
 * - failure: counted; quarantine below the threshold, roll back past it.
 * - retry: the device tries again (its own backoff) until the device timeout; not counted.
 * - ignored: says nothing about the release (a redelivered older desired).
 * - security: the manifest could not be trusted: pause the rollout with a security alert.
 * - key_set: `unknown_key` retries from a device still catching up after a key rotation, pauses otherwise.
 */
export type RejectClass = 'failure' | 'retry' | 'ignored' | 'security' | 'key_set';
export const REJECT_CLASSES = {
  load_failed: 'failure',
  self_test_failed: 'failure',
  hash_mismatch: 'failure',
  length_mismatch: 'failure',
  input_mismatch: 'failure',
  denied_hash: 'failure',
  download_failed: 'retry',
  expired: 'retry',
  stale_release: 'ignored',
  bad_signature: 'security',
  malformed_manifest: 'security',
  // A release number far above the floor: only a leaked or misused key makes one (issue 10).
  sequence_jump: 'security',
  assignment_mismatch: 'security',
  unknown_key: 'key_set',
} as const satisfies Record<RejectReason, RejectClass> & Record<string, RejectClass>;

/** What a device event does to its rollout row; `rolled_back` (the device's own health gate) is a failure. */
export type EventEffect = 'installed' | 'failure' | 'retry' | 'ignored' | 'security';

/**
 * @param keySet the device's trusted key-set version and the cloud's current one, when known. Without it
 *   an `unknown_key` is taken as a device catching up (retry): pausing a fleet on missing data would let
 *   any device stop every rollout.
 */
export function eventEffect(ev: Pick<DeviceEvent, 'type' | 'reason'>, keySet?: { device: number | null; current: number }): EventEffect {
  // Agent updates (issue 14): done only once committed (healthy on the new version); a rollback or a
  // refusal is a failure (quarantine and the threshold, like models). `agent_installed` is not done yet.
  if (ev.type === 'agent_committed') return 'installed';
  if (ev.type === 'agent_rolled_back' || ev.type === 'agent_rejected') return 'failure';
  if (ev.type === 'agent_installed') return 'ignored';
  if (ev.type === 'installed' || ev.type === 'committed') return 'installed';
  if (ev.type === 'rolled_back') return 'failure';
  const reason = ev.reason as RejectReason | undefined;
  const cls: RejectClass = reason && reason in REJECT_CLASSES ? REJECT_CLASSES[reason] : 'failure';
  if (cls !== 'key_set') return cls;
  if (!keySet || keySet.device === null || keySet.device < keySet.current) return 'retry';
  return 'security';
}

/**
 * Roll back when failed + quarantined ≥ max(minFailures, ceil(failureThreshold × (installed + failed +
 * quarantined))), counted over the started waves. One broken SD card (or one hostile device) never rolls a
 * release back for everyone.
 */
export function rollbackDue(c: { installed: number; failed: number; quarantined: number }, p: { minFailures: number; failureThreshold: number }): boolean {
  const bad = c.failed + c.quarantined;
  if (bad === 0) return false;
  return bad >= Math.max(p.minFailures, Math.ceil(p.failureThreshold * (c.installed + bad) - 1e-9));
}

export class RolloutError extends Error {
  override readonly name = 'RolloutError';
  constructor(
    message: string,
    /** not_found | invalid | conflict: lets the API map it to 404 / 400 / 409. */
    readonly code: 'not_found' | 'invalid' | 'conflict',
  ) {
    super(message);
  }
}

export const rolloutTargetSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('all') }),
  z.strictObject({ kind: z.literal('group'), group: z.string().min(1).max(128) }),
  z.strictObject({ kind: z.literal('devices'), ids: z.array(deviceIdSchema).min(1).max(100_000) }),
]);
export type RolloutTarget = z.infer<typeof rolloutTargetSchema>;

const waveShares = z
  .array(z.number().gt(0).max(1))
  .min(1)
  .max(20)
  .refine((w) => w.every((x, i) => i === 0 || x > w[i - 1]!), 'waves must increase')
  .refine((w) => w[w.length - 1] === 1, 'the last wave must be 1 (the whole target)');

/** Body of a rollout request (the API validates with it too). Defaults are the same for the API and auto-rollouts. */
export const rolloutRequestSchema = z
  .strictObject({
    model: z.string().min(1).max(128),
    /** `agent` (issue 14): `releaseSeq` is an agentSeq and `model` is `agent:<platform>`. */
    kind: z.enum(['model', 'agent']).default('model'),
    releaseSeq,
    target: rolloutTargetSchema.default({ kind: 'all' }),
    /** Cumulative shares of the target, e.g. [0.01, 0.1, 0.5, 1]; the first wave is the canaries. Default [0.1, 1]. */
    waves: waveShares.optional(),
    /** Kept for older clients: `canaryShare: s` means `waves: [s, 1]`. Not together with `waves`. */
    canaryShare: z.number().gt(0).max(1).optional(),
    /** How long every installed device of a wave must stay healthy before the next wave. */
    soakSeconds: z.number().int().min(0).max(30 * 24 * 3600).default(300),
    /** See rollbackDue. */
    failureThreshold: z.number().min(0).max(1).default(0.2),
    minFailures: z.number().int().min(1).max(1_000_000).default(2),
    /** A device that has not settled by then is `timed_out` (not a failure; its desired stays). */
    deviceTimeoutSeconds: z.number().int().min(1).max(365 * 24 * 3600).default(3600),
    /** A canary offline longer than this is replaced by a device of the next wave. */
    canaryGraceSeconds: z.number().int().min(1).max(7 * 24 * 3600).default(300),
    /**
     * Agreement gate (issue 13): a device is held back when the paired 95% upper bound of (candidate −
     * running) accuracy on its audit traffic is below −agreementMargin (0.01 = 1 point; 1 turns it off).
     */
    agreementMargin: z.number().min(0).max(1).default(0.01),
  })
  .superRefine((r, ctx) => {
    if (r.waves !== undefined && r.canaryShare !== undefined) ctx.addIssue({ code: 'custom', path: ['canaryShare'], message: 'give either waves or canaryShare, not both' });
  });
export type RolloutRequest = z.input<typeof rolloutRequestSchema>;
export type RolloutRequestParsed = z.output<typeof rolloutRequestSchema>;

/** The waves a request means: `waves`, else `[canaryShare, 1]`, else `[0.1, 1]`. */
export function wavesOf(r: { waves?: number[] | null; canaryShare?: number | null }): number[] {
  if (r.waves && r.waves.length) return r.waves;
  const s = r.canaryShare ?? 0.1;
  return s >= 1 ? [1] : [s, 1];
}

export function inTarget(target: RolloutTarget, device: { id: string; groups: unknown }): boolean {
  switch (target.kind) {
    case 'all':
      return true;
    case 'group':
      return Array.isArray(device.groups) && device.groups.includes(target.group);
    case 'devices':
      return target.ids.includes(device.id);
  }
}

/**
 * Deterministic waves: devices ordered online first, then by sha256(rollout id, device id), so a re-run
 * picks the same devices and different rollouts spread. Wave i holds the devices up to
 * ceil(waves[i] × n), at least one more than the wave before while devices remain.
 */
export function assignWaves(rolloutId: string, targeted: readonly Pick<DeviceRow, 'id' | 'online'>[], waves: readonly number[]): Map<string, number> {
  const key = (id: string) => createHash('sha256').update(`${rolloutId}\0${id}`).digest('hex');
  const sorted = targeted
    .map((d) => ({ id: d.id, online: d.online, k: key(d.id) }))
    .sort((a, b) => Number(b.online) - Number(a.online) || (a.k < b.k ? -1 : a.k > b.k ? 1 : 0));
  const out = new Map<string, number>();
  let from = 0;
  waves.forEach((share, w) => {
    // The epsilon keeps float noise (0.3 × 10 = 3.0000000000000004) from adding a device.
    const upTo = w === waves.length - 1 ? sorted.length : Math.min(sorted.length, Math.max(from + 1, Math.ceil(share * sorted.length - 1e-9)));
    for (; from < upTo; from++) out.set(sorted[from]!.id, w);
  });
  return out;
}
