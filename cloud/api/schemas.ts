import { z } from 'zod';
import { deviceId, manifestSchema, releaseSeq } from '../../shared/protocol/schemas.js';
import { rolloutRequestSchema } from '../rollouts/policy.js';
import type { RolloutTarget } from './types.js';

/**
 * Request pieces several resources share. Each route's own body schema lives in its resource file; all
 * of them feed both validation and `/openapi.json`.
 */

/** The manifest's own rule for model names (shared/protocol), so every model can be released. */
export const modelName = manifestSchema.shape.model;
export const groupName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'invalid group name');

/** A decimal path/query integer (`/v1/releases/12`), as a release sequence. */
export const seqString = z
  .string()
  .regex(/^\d{1,15}$/, 'expected a positive integer')
  .transform(Number)
  .pipe(releaseSeq);

export const limitQuery = z
  .string()
  .regex(/^\d{1,4}$/, 'expected an integer 1..1000')
  .transform(Number)
  .pipe(z.number().int().min(1).max(1000))
  .optional();

/** `"all"`, `{ "group": G }` or `{ "devices": [ids] }` on the wire; the RolloutTarget stored and handed to the engine. */
export const rolloutTargetSchema = z
  .union([
    z.literal('all'),
    z.strictObject({ group: groupName }),
    z.strictObject({ devices: z.array(deviceId).min(1).max(10_000) }),
  ], { error: 'expected "all", { "group": NAME } or { "devices": [IDS] }' })
  .transform((t): RolloutTarget => (t === 'all' ? { kind: 'all' } : 'group' in t ? { kind: 'group', group: t.group } : { kind: 'devices', ids: [...new Set(t.devices)] }));

/** How a release goes out: waves (or a canary share), soak, device timeout, failure threshold. The engine's own fields and defaults (cloud/rollouts). */
export const rolloutPolicyFields = {
  canaryShare: rolloutRequestSchema.shape.canaryShare,
  soakSeconds: rolloutRequestSchema.shape.soakSeconds,
  failureThreshold: rolloutRequestSchema.shape.failureThreshold,
};

/** The rest of the engine's policy, accepted by `POST /v1/rollouts`. */
export const rolloutWaveFields = {
  waves: rolloutRequestSchema.shape.waves,
  minFailures: rolloutRequestSchema.shape.minFailures,
  deviceTimeoutSeconds: rolloutRequestSchema.shape.deviceTimeoutSeconds,
  canaryGraceSeconds: rolloutRequestSchema.shape.canaryGraceSeconds,
  agreementMargin: rolloutRequestSchema.shape.agreementMargin,
};
