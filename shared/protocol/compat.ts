import { z } from 'zod';
import { capabilityList, isoTime, PROTOCOL_VERSION, type DeviceEvent, type Example, type Manifest, type SignedManifest, type Status } from './schemas.js';

/**
 * The compatibility policy, both ways (issue 10, "First, a small commit of its own").
 *
 * Every schema of the protocol is strict, so a field a peer does not know makes it refuse the whole
 * payload. Neither side may therefore send a new field until the other has said it understands it:
 *
 * - cloud → device: a device lists in its `status.capabilities` what it understands. The cloud sends
 *   it only those optional `desired` envelope fields and message kinds; a release whose *signed*
 *   manifest uses a field the device lacks cannot be stripped (the signature covers it), so it is not
 *   sent at all and the device's rollout state is `incompatible`. A status with no capabilities
 *   (every daemon before this revision) gets exactly today's fields.
 * - device → cloud: the cloud retains its info on `apprentice/v1/cloud` (cloudInfoSchema) with the
 *   features it accepts. A device sends a new field or value only when `accepts` lists it; with no
 *   info (an older cloud, or before the retained message arrived) it sends today's payloads.
 *
 * `v` in every payload stays 1: it names the wire format of topic prefix `apprentice/v1`, which every
 * revision must still parse. `protocolVersion` counts the revisions within it.
 */
export const PROTOCOL_REVISION = 2;

/** What a device may declare it understands from the cloud (`status.capabilities`). */
export const DEVICE_CAPABILITIES = {
  /** Consumes `devices/{id}/receipts`; only such devices get receipts (others delete on PUBACK). */
  receipts: 'receipts',
  /** Verifies the root-signed key set on `trust/keyset`. */
  keyset: 'keyset',
  /** Parses `manifest.input.range`. */
  inputRange: 'manifest.input-range',
  /** Parses `manifest.input.image` and preprocesses PNG/JPEG inputs by it (issue 11). */
  inputImage: 'manifest.input-image',
  /** Parses `manifest.lineage.source` (uploaded releases, issue 8). */
  lineageSource: 'manifest.lineage-source',
  /** Parses and checks the signed `assignment` beside the manifest in `desired`. */
  assignment: 'desired.assignment',
  /**
   * Installs signed agent releases from `devices/{id}/agent` (issue 14). Only such devices are targets
   * of agent rollouts. (Capability names allow `.` and `-` only, hence not `agent_update`.)
   */
  agentUpdate: 'agent-update',
  /** Parses `manifest.shadow` and runs such a release as a shadow beside the running model (issue 13 item 4). */
  shadow: 'manifest.shadow',
  /** Parses `manifest.cohort` and checks it against the signed assignment's cohort (issue 13). */
  cohort: 'manifest.cohort',
} as const;
export type DeviceCapability = (typeof DEVICE_CAPABILITIES)[keyof typeof DEVICE_CAPABILITIES];

/** What the cloud may say it accepts from devices (cloud info `accepts`). */
export const CLOUD_FEATURES = {
  /** `status.protocolVersion`, `capabilities`, `trust` and `degraded`. */
  statusExt: 'status.ext',
  /** This cloud sends `devices/{id}/receipts` to devices that declare the `receipts` capability (issue 9). */
  receipts: 'receipts',
  /** Event reasons newer than protocol 1 (NEWER_EVENT_REASONS): `sequence_jump`, `assignment_mismatch`, `crash_loop`. */
  eventReasons: 'events.reasons-2',
  /** Examples may carry `source`, the re-encoded image they came from (issue 11). */
  exampleSource: 'example.source-image',
  /** `status.platform` (issue 14); the agent's version goes in `status.agent`, which every cloud accepts. */
  statusPlatform: 'status.platform',
  /** Events of type `agent_*` with their `agent` field (issue 14). */
  agentEvents: 'events.agent',
  /** `telemetry.shadow`: on-device shadow figures (issue 13 item 4). */
  telemetryShadow: 'telemetry.shadow',
  /** Example reason `shadow_disagreement` (NEWER_EXAMPLE_REASONS). */
  shadowExamples: 'examples.shadow-disagreement',
} as const;
export type CloudFeature = (typeof CLOUD_FEATURES)[keyof typeof CLOUD_FEATURES];

/**
 * Payload of `apprentice/v1/cloud` (retained). Deliberately *not* strict: it is read by daemons
 * older than the cloud, and unknown keys only describe features the device will not use anyway.
 */
export const cloudInfoSchema = z.object({
  v: z.literal(PROTOCOL_VERSION),
  protocolVersion: z.number().int().min(1).max(1000),
  /** Device → cloud features this cloud accepts; unknown names are ignored by devices. */
  accepts: capabilityList,
  at: isoTime,
  agent: z.string().max(64).optional(),
});
export type CloudInfo = z.infer<typeof cloudInfoSchema>;

/** This cloud's info, for the retained `apprentice/v1/cloud`. */
export function cloudInfo(at: Date, agent?: string): CloudInfo {
  return { v: PROTOCOL_VERSION, protocolVersion: PROTOCOL_REVISION, accepts: Object.values(CLOUD_FEATURES), at: at.toISOString(), ...(agent ? { agent } : {}) };
}

/** Device side: whether the cloud said it accepts `feature`. No info = an older cloud = no. */
export function cloudAccepts(info: Pick<CloudInfo, 'accepts'> | undefined, feature: CloudFeature): boolean {
  return info?.accepts.includes(feature) ?? false;
}

/** What the cloud knows of a device's protocol, from its last status. */
export interface DeviceCompat {
  protocolVersion: number;
  capabilities: ReadonlySet<string>;
}

/** From a status (or the registry's copy of it); a missing status or field means protocol 1 and nothing more. */
export function deviceCompat(status?: Pick<Status, 'protocolVersion' | 'capabilities'> | { protocolVersion?: number | null; capabilities?: readonly string[] | null } | null): DeviceCompat {
  return { protocolVersion: status?.protocolVersion ?? 1, capabilities: new Set(status?.capabilities ?? []) };
}

/** Cloud → device message kinds beyond today's, each sent only to devices that declared it. */
export const OPTIONAL_MESSAGE_KINDS = { receipts: DEVICE_CAPABILITIES.receipts, keyset: DEVICE_CAPABILITIES.keyset } as const;

/** Whether the cloud may send `kind` to this device. */
export function cloudMaySend(device: DeviceCompat, kind: keyof typeof OPTIONAL_MESSAGE_KINDS): boolean {
  return device.capabilities.has(OPTIONAL_MESSAGE_KINDS[kind]);
}

/**
 * Signed manifest fields newer than protocol 1, with the capability each needs. Add a row with every
 * new optional manifest field; the test in test/unit/protocol/compat.test.ts holds this table to the schema.
 */
export const MANIFEST_REQUIREMENTS: ReadonlyArray<{ path: string; capability: DeviceCapability; present: (m: Manifest) => boolean }> = [
  { path: 'input.range', capability: DEVICE_CAPABILITIES.inputRange, present: (m) => m.input.range !== undefined },
  { path: 'input.image', capability: DEVICE_CAPABILITIES.inputImage, present: (m) => m.input.image !== undefined },
  { path: 'lineage.source', capability: DEVICE_CAPABILITIES.lineageSource, present: (m) => m.lineage.source !== undefined },
  // A device without it would refuse the key, or worse (a hand-rolled parser) serve the candidate: never sent.
  { path: 'shadow', capability: DEVICE_CAPABILITIES.shadow, present: (m) => m.shadow !== undefined },
  { path: 'cohort', capability: DEVICE_CAPABILITIES.cohort, present: (m) => m.cohort !== undefined },
];

/** Optional `desired` envelope fields (outside the manifest's signature), stripped for devices without the capability. */
export const ENVELOPE_FIELDS: ReadonlyArray<{ field: Exclude<keyof SignedManifest, 'manifest' | 'signature'>; capability: DeviceCapability }> = [
  { field: 'assignment', capability: DEVICE_CAPABILITIES.assignment },
];

export type DesiredFor = { compatible: true; desired: SignedManifest; stripped: string[] } | { compatible: false; missing: DeviceCapability[] };

/**
 * The one place the cloud decides what of a release a device gets: incompatible when the signed
 * manifest needs a capability the device lacks (the rollout records `incompatible` and sends
 * nothing), else the envelope with the optional fields it did not declare removed.
 *
 * @example
 * const r = desiredFor(signed, deviceCompat(row));
 * if (r.compatible) await publisher.publishDesired(id, r.desired);
 */
export function desiredFor(signed: SignedManifest, device: DeviceCompat): DesiredFor {
  const missing = MANIFEST_REQUIREMENTS.filter((r) => r.present(signed.manifest) && !device.capabilities.has(r.capability)).map((r) => r.capability);
  if (missing.length) return { compatible: false, missing: [...new Set(missing)] };
  const desired: SignedManifest = { ...signed };
  const stripped: string[] = [];
  for (const f of ENVELOPE_FIELDS) {
    if (desired[f.field] !== undefined && !device.capabilities.has(f.capability)) {
      delete desired[f.field];
      stripped.push(f.field);
    }
  }
  return { compatible: true, desired, stripped };
}

type EventReason = NonNullable<DeviceEvent['reason']>;

/**
 * Event reasons an older cloud's strict event schema refuses, each with the feature a cloud must accept
 * for it and the protocol-1 reason with the same effect on a rollout (cloud/rollouts/policy.ts) that
 * an older cloud gets instead, the real reason kept at the head of `detail`. Add a row with every new
 * reason.
 */
export const NEWER_EVENT_REASONS: Readonly<Partial<Record<EventReason, { feature: CloudFeature; older: EventReason }>>> = {
  // Both are security pauses on the current cloud; malformed_manifest is the older security reason.
  sequence_jump: { feature: CLOUD_FEATURES.eventReasons, older: 'malformed_manifest' },
  assignment_mismatch: { feature: CLOUD_FEATURES.eventReasons, older: 'malformed_manifest' },
  // A rollback either way; inference_errors is the older rollback reason.
  crash_loop: { feature: CLOUD_FEATURES.eventReasons, older: 'inference_errors' },
};

/** Whether this event's reason needs the cloud's info before it may be sent. */
export function eventNeedsCloudInfo(ev: Pick<DeviceEvent, 'reason'>): boolean {
  return ev.reason !== undefined && NEWER_EVENT_REASONS[ev.reason] !== undefined;
}

/**
 * Device side: the event as this cloud can read it. A newer reason goes as is to a cloud that accepts
 * it, else as its older reason with `"<reason>: "` put before the detail (cut to the schema's 1,024).
 */
export function eventForCloud(ev: DeviceEvent, info: Pick<CloudInfo, 'accepts'> | undefined): DeviceEvent {
  const row = ev.reason === undefined ? undefined : NEWER_EVENT_REASONS[ev.reason];
  if (!row || cloudAccepts(info, row.feature)) return ev;
  return { ...ev, reason: row.older, detail: `${ev.reason}: ${ev.detail ?? ''}`.slice(0, 1024) };
}

type ExampleReason = Example['reason'];

/**
 * Example reasons an older cloud's strict example schema refuses (its whole batch would be refused), each
 * with the feature a cloud must accept for it and the protocol-1 reason an older cloud gets instead.
 */
export const NEWER_EXAMPLE_REASONS: Readonly<Partial<Record<ExampleReason, { feature: CloudFeature; older: ExampleReason }>>> = {
  // A disagreement is a hard example near the boundary between two models: low_margin is its closest kin.
  shadow_disagreement: { feature: CLOUD_FEATURES.shadowExamples, older: 'low_margin' },
};

/**
 * Device side: the reason to put in an example for this cloud (the newer reason, or its older stand-in).
 * Decided when the example is queued, like `source` (an outbox row is sent as written).
 *
 * @example
 * const reason = exampleReasonForCloud('shadow_disagreement', (f) => link.accepts(f));
 */
export function exampleReasonForCloud(reason: ExampleReason, accepts: (feature: CloudFeature) => boolean): ExampleReason {
  const row = NEWER_EXAMPLE_REASONS[reason];
  return !row || accepts(row.feature) ? reason : row.older;
}
