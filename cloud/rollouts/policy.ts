import { createHash } from 'node:crypto';
import { z } from 'zod';
import { deviceId as deviceIdSchema, releaseSeq } from '../../shared/protocol/index.js';
import type { DeviceRow } from '../registry/schema.js';

/** Rollout policy: the states as stored in `rollouts.state` / `rollout_devices.state`, the request, and canary choice. */

/**
 * pending → canary → fleet → completed; any active state → aborted (manual, superseded) or
 * rolling_back → rolled_back (failure threshold or manual rollback). `rolling_back` is persisted so a
 * restart in the middle of a re-issue finishes it.
 */
export const ROLLOUT_STATES = ['pending', 'canary', 'fleet', 'rolling_back', 'completed', 'aborted', 'rolled_back'] as const;
export type RolloutState = (typeof ROLLOUT_STATES)[number];
export const ACTIVE_ROLLOUT_STATES = ['pending', 'canary', 'fleet', 'rolling_back'] as const satisfies readonly RolloutState[];

/** waiting (not given the release) → desired (retained desired published) → installed | rejected | rolled_back. */
export const ROLLOUT_DEVICE_STATES = ['waiting', 'desired', 'installed', 'rejected', 'rolled_back'] as const;
export type RolloutDeviceState = (typeof ROLLOUT_DEVICE_STATES)[number];
export const FAILED_DEVICE_STATES: readonly RolloutDeviceState[] = ['rejected', 'rolled_back'];
export const SETTLED_DEVICE_STATES: readonly RolloutDeviceState[] = ['installed', 'rejected', 'rolled_back'];

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

/** Body of a rollout request (the API validates with it too). */
export const rolloutRequestSchema = z.strictObject({
  model: z.string().min(1).max(128),
  releaseSeq,
  target: rolloutTargetSchema.default({ kind: 'all' }),
  /** Share of targeted devices that get the release first; at least one device. */
  canaryShare: z.number().min(0).max(1).default(0.1),
  /** How long every canary must stay healthy after the last one installed. */
  soakSeconds: z.number().int().min(0).max(30 * 24 * 3600).default(300),
  /** Abort (and roll back) when the share of failed devices (canaries, then all targeted) exceeds this. */
  failureThreshold: z.number().min(0).max(1).default(0),
});
export type RolloutRequest = z.input<typeof rolloutRequestSchema>;
export type RolloutRequestParsed = z.output<typeof rolloutRequestSchema>;

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
 * Deterministic canaries: ceil(share × targeted) devices (at least one), online ones first, then by
 * sha256(rollout id, device id), so a re-run picks the same devices and different rollouts spread.
 */
export function pickCanaries(rolloutId: string, targeted: readonly Pick<DeviceRow, 'id' | 'online'>[], share: number): Set<string> {
  // The epsilon keeps float noise (0.3 × 10 = 3.0000000000000004) from adding a canary.
  const n = Math.min(targeted.length, Math.max(1, Math.ceil(share * targeted.length - 1e-9)));
  const key = (id: string) => createHash('sha256').update(`${rolloutId}\0${id}`).digest('hex');
  const sorted = targeted
    .map((d) => ({ id: d.id, online: d.online, k: key(d.id) }))
    .sort((a, b) => Number(b.online) - Number(a.online) || (a.k < b.k ? -1 : a.k > b.k ? 1 : 0));
  return new Set(sorted.slice(0, n).map((d) => d.id));
}
