import { verifyAssignment, type TrustedKey } from '../../shared/manifest/index.js';
import type { Manifest } from '../../shared/protocol/index.js';
import type { RejectReason } from './types.js';

/**
 * The device side of the signed assignment (issue 10 item 4). A `desired` that carries an assignment
 * must carry one signed by a trusted release key, for this device, for the manifest's model and for its
 * cohort (`manifest.cohort`, absent = the base line = assignment cohort null, issue 13);
 * anything else is refused (`assignment_mismatch`, or the signature's own reason). A `desired` without
 * one (a cloud that does not send assignments) is judged on the manifest alone, unless `required`
 * (edge.json `requireAssignment`), when it is refused as `assignment_mismatch` too.
 *
 * @returns undefined when the update may go on, else the rejection.
 */
export function checkAssignment(envelope: unknown, m: Manifest, deviceId: string, trusted: readonly TrustedKey[], required = false): { reason: RejectReason; detail: string } | undefined {
  const signed = (envelope as { assignment?: unknown } | null)?.assignment;
  if (signed === undefined) return required ? { reason: 'assignment_mismatch', detail: 'the desired carries no signed assignment and this device requires one (requireAssignment)' } : undefined;
  const v = verifyAssignment(signed, trusted);
  if (!v.ok) return { reason: v.reason, detail: v.detail };
  const a = v.assignment;
  if (a.deviceId !== deviceId) return { reason: 'assignment_mismatch', detail: `the assignment is for device "${a.deviceId}", this is "${deviceId}"` };
  if (a.model !== m.model) return { reason: 'assignment_mismatch', detail: `this device is assigned model "${a.model}", the manifest is for "${m.model}"` };
  // Issue 13: a device never runs another cohort's student, nor the base line while it is in a cohort.
  const cohort = m.cohort ?? null;
  if (a.cohort !== cohort) return { reason: 'assignment_mismatch', detail: `this device is assigned ${a.cohort === null ? 'the base line' : `cohort "${a.cohort}"`}, the manifest is for ${cohort === null ? 'the base line' : `cohort "${cohort}"`}` };
  return undefined;
}
