import { z } from 'zod';
import { DEVICE_ID_RE, SHA256_RE } from './topics.js';

/**
 * Every MQTT payload of the protocol, as zod schemas. Types come from `z.infer`; there is no
 * hand-written twin that could drift. Schemas are strict: unknown keys are rejected, because a
 * payload we do not fully understand must not be acted on.
 */
export const PROTOCOL_VERSION = 1;

export const deviceId = z.string().regex(DEVICE_ID_RE, 'invalid device id');
export const sha256Hex = z.string().regex(SHA256_RE, 'expected 64 lowercase hex characters');
export const isoTime = z.iso.datetime({ offset: true });
export const releaseSeq = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
const finite = z.number().refine(Number.isFinite, 'must be finite');

/** How raw inputs become model inputs: `model = raw * scale + offset`, per element. */
export const scalingSchema = z.strictObject({ scale: finite, offset: finite });

/**
 * The image form of an input (issue 11): how a device turns a PNG or JPEG into the model's input
 * (shared/image/preprocess.ts): resize to height × width (cover, centre crop), convert to `channels`
 * (1 grey, 3 sRGB), `x = (pixel / 255 − mean[c]) / std[c]`, laid out nhwc or nchw.
 */
export const imageSpecSchema = z
  .strictObject({
    height: z.number().int().min(1).max(4096),
    width: z.number().int().min(1).max(4096),
    channels: z.union([z.literal(1), z.literal(3)]),
    layout: z.enum(['nhwc', 'nchw']),
    /** Per channel, in the [0, 1] pixel scale (torchvision's Normalize convention). */
    mean: z.array(finite).min(1).max(3),
    std: z.array(finite.refine((v) => v > 0, 'must be > 0')).min(1).max(3),
  })
  .refine((s) => s.mean.length === s.channels && s.std.length === s.channels, { message: 'mean and std need one value per channel', path: ['mean'] });
export type ImageSpec = z.infer<typeof imageSpecSchema>;

export const inputSpecSchema = z
  .strictObject({
    /** Per-example shape, without the batch dimension, e.g. [784] or [28, 28, 1]. */
    shape: z.array(z.number().int().min(1)).min(1).max(4),
    dtype: z.literal('float32'),
    scaling: scalingSchema,
    /** The raw encoding devices may receive (uint8 pixels are scaled with `scaling`). */
    raw: z.enum(['float32', 'uint8']).default('float32'),
    /**
     * Present for image models: devices then accept PNG/JPEG. Optional and additive, so manifests of
     * non-image models are byte-identical to before. Needs the device capability `manifest.input-image`
     * (compat.ts): the cloud never sends a release using it to a daemon that does not declare it.
     */
    image: imageSpecSchema.optional(),
    /**
     * Inclusive [min, max] of raw input values the model is meant for (issue 10, health gate); requests
     * outside it are refused before inference. Needs the device capability `manifest.input-range`
     * (shared/protocol/compat.ts): older daemons refuse unknown keys.
     */
    range: z.tuple([finite, finite]).refine(([lo, hi]) => lo < hi, 'range min must be below max').optional(),
  })
  .refine((s) => !s.image || imageFits(s.image, s.shape), {
    message: 'image height × width × channels must match shape (flat, or [H, W, C] for nhwc, [C, H, W] for nchw)',
    path: ['image'],
  });

/** A flat shape of H·W·C values, or the 3-d shape of the image's layout (a batch-less 4-d shape is not an image). */
function imageFits(i: ImageSpec, shape: number[]): boolean {
  const size = i.height * i.width * i.channels;
  if (shape.length === 1) return shape[0] === size;
  const want = i.layout === 'nhwc' ? [i.height, i.width, i.channels] : [i.channels, i.height, i.width];
  return shape.length === 3 && shape.every((d, k) => d === want[k]);
}
export type InputSpec = z.infer<typeof inputSpecSchema>;

export const artifactSchema = z.strictObject({
  format: z.literal('onnx'),
  quantization: z.enum(['fp32', 'int8']),
  sha256: sha256Hex,
  bytes: z.number().int().min(1).max(2 ** 31),
  chunkSize: z.number().int().min(1024).max(16 * 1024 * 1024),
  /** sha256 of each retained chunk, in order: lets a device check a chunk's position and content on arrival. */
  chunks: z.array(sha256Hex).min(1),
  /** Optional HTTP(S) source for the same bytes; the device checks sha256 and length either way. */
  url: z.url({ protocol: /^https?$/ }).optional(),
});

export const selfTestSchema = z.strictObject({
  /** One example, already scaled, flattened. */
  input: z.array(finite).min(1),
  /** The model's expected output for it (logits or probabilities, as `output.kind`). */
  expected: z.array(finite).min(1),
  /** Max absolute difference tolerated (int8 models differ from fp32 a little). */
  tolerance: z.number().min(0).max(10),
});

export const manifestSchema = z
  .strictObject({
    v: z.literal(PROTOCOL_VERSION),
    model: z.string().min(1).max(128).regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'invalid model name'),
    release: releaseSeq,
    artifact: artifactSchema,
    input: inputSpecSchema,
    output: z.strictObject({ kind: z.enum(['logits', 'probs']), classes: z.number().int().min(2) }),
    labels: z.array(z.string().max(128)).min(2),
    teacher: z.strictObject({ id: z.string().min(1).max(256) }),
    metrics: z.record(z.string(), finite),
    lineage: z.strictObject({
      exampleCount: z.number().int().min(0),
      round: z.string().max(128).optional(),
      /** Set when this release re-issues an earlier model under a new sequence (rollback). */
      reissueOf: releaseSeq.optional(),
      /**
       * Where the model came from when it was not distilled here: "uploaded" (POST /v1/models/{name}/releases).
       * Optional and only set on uploads, so distilled manifests are byte-identical to before.
       */
      source: z.literal('uploaded').optional(),
    }),
    parent: releaseSeq.nullable(),
    /**
     * The release line (issue 13): the cohort this student was trained for; its `parent` is then the
     * base release it warm-started from. Absent on the base line, so base manifests are as before.
     * The device refuses it unless its signed assignment names the same cohort.
     */
    cohort: z.string().min(1).max(128).optional(),
    createdAt: isoTime,
    expiresAt: isoTime,
    selfTest: selfTestSchema,
    /**
     * Present on a shadow install only (issue 13 item 4): the device loads the model beside the one it
     * runs, runs both on live requests until `until`, answers with the running one, reports agreement and
     * never raises its release floor for it. One object rather than `mode` + `shadowUntil`: a shadow
     * without an end cannot be expressed, and one optional key needs one capability row
     * (`manifest.shadow`, compat.ts). Signed, so a device cannot be talked into serving a shadow.
     */
    shadow: z.strictObject({ until: isoTime }).optional(),
  })
  .refine((m) => m.labels.length === m.output.classes, { message: 'labels must have one entry per output class', path: ['labels'] })
  .refine((m) => m.selfTest.expected.length === m.output.classes, { message: 'selfTest.expected must have one value per class', path: ['selfTest', 'expected'] })
  .refine((m) => m.selfTest.input.length === m.input.shape.reduce((a, b) => a * b, 1), { message: 'selfTest.input length must match input.shape', path: ['selfTest', 'input'] })
  .refine((m) => m.artifact.chunks.length === Math.ceil(m.artifact.bytes / m.artifact.chunkSize), { message: 'chunk count must equal ceil(bytes / chunkSize)', path: ['artifact', 'chunks'] });
export type Manifest = z.infer<typeof manifestSchema>;

export const signatureSchema = z.strictObject({
  alg: z.literal('ed25519'),
  keyId: z.string().regex(/^[0-9a-f]{16}$/, 'expected a 16-hex-digit key id'),
  /** base64 Ed25519 signature over the RFC 8785 canonical JSON of `manifest`. */
  sig: z.base64(),
});

/**
 * Which model (and cohort) a device is assigned to, signed by a release key (issue 10 item 4): a
 * device refuses manifests for another model. Travels beside the manifest in `desired`, only to
 * devices declaring `desired.assignment` (compat.ts).
 */
export const assignmentSchema = z.strictObject({
  deviceId,
  model: z.string().min(1).max(128),
  cohort: z.string().min(1).max(128).nullable(),
});
export type Assignment = z.infer<typeof assignmentSchema>;
export const signedAssignmentSchema = z.strictObject({ assignment: z.unknown(), signature: signatureSchema });

/** Payload of `devices/{id}/desired`: the manifest and its detached signature. */
export const signedManifestSchema = z.strictObject({
  manifest: z.unknown(),
  signature: signatureSchema,
  assignment: signedAssignmentSchema.optional(),
});
export type SignedManifest = {
  manifest: Manifest;
  signature: z.infer<typeof signatureSchema>;
  assignment?: { assignment: Assignment; signature: z.infer<typeof signatureSchema> };
};

/** A capability or feature name (shared/protocol/compat.ts); unknown names are ignored, never refused. */
export const CAPABILITY_RE = /^[a-z][a-z0-9]*([.-][a-z0-9]+)*$/;
export const capabilityName = z.string().max(64).regex(CAPABILITY_RE, 'invalid capability name');
export const capabilityList = z.array(capabilityName).max(64);

/**
 * Where a device stands with the root of trust (issue 10): `trusted_keys` = only the keys of its
 * edge.json (no key set accepted yet), `current` = a key set within its expiry, `trust_stale` = the
 * newest key set it has is expired (kept, and reported).
 */
export const TRUST_STATES = ['trusted_keys', 'current', 'trust_stale'] as const;
const reasonCode = z.string().max(64).regex(/^[a-z][a-z0-9_]*$/, 'expected a snake_case reason');

export const statusSchema = z.strictObject({
  v: z.literal(PROTOCOL_VERSION),
  deviceId,
  state: z.enum(['online', 'offline']),
  model: z.string().nullable(),
  release: releaseSeq.nullable(),
  sha256: sha256Hex.nullable(),
  at: isoTime,
  agent: z.string().max(64).optional(),
  // The fields below are sent only to a cloud whose info (topics.cloudInfo) accepts `status.ext`;
  // a status without them is a protocol-1 device and gets only today's fields and message kinds.
  /** The protocol revision the daemon speaks (compat.ts PROTOCOL_REVISION). */
  protocolVersion: z.number().int().min(1).max(1000).optional(),
  /** What the device understands from the cloud (DEVICE_CAPABILITIES, and any newer names). */
  capabilities: capabilityList.optional(),
  trust: z.strictObject({ keysetVersion: z.number().int().min(1).nullable(), state: z.enum(TRUST_STATES) }).optional(),
  /** Why the device serves below par (e.g. `revoked_key`: only a revoked key's release is left), or null. */
  degraded: reasonCode.nullable().optional(),
  /** `${process.platform}-${process.arch}`; sent only to a cloud that accepts `status.platform` (issue 14). */
  platform: z.string().max(64).regex(/^[a-z0-9]+-[a-z0-9_]+$/, 'expected <os>-<arch>').optional(),
});
export type Status = z.infer<typeof statusSchema>;

const count = z.number().int().min(0);

/**
 * What a device reports of its shadow candidate (issue 13 item 4), cumulative since it was loaded.
 * `state`: `running` while the window is open; `dropped` (with `reason`) for the reports after it ended
 * without a switch (`expired`, `superseded`, `restart`, `load_failed`, `switched`), so the cloud sees the end.
 */
export const shadowTelemetrySchema = z.strictObject({
  model: z.string().min(1).max(128),
  release: releaseSeq,
  sha256: sha256Hex,
  until: isoTime,
  state: z.enum(['running', 'dropped']),
  reason: z.string().max(64).regex(/^[a-z][a-z0-9_]*$/).optional(),
  /** Examples both models answered. */
  requests: count,
  /** Of those, how many got the same top class. */
  agreements: count,
  /** Examples not shadowed because the shadow was busy (a bound: live answers never wait for it). */
  skipped: count,
  /** Shadow run time per run, over the recent runs. */
  latencyMs: z.strictObject({ p50: z.number().min(0).nullable(), p95: z.number().min(0).nullable() }),
}).refine((s) => s.agreements <= s.requests, { message: 'agreements cannot exceed requests', path: ['agreements'] });
export type ShadowTelemetry = z.infer<typeof shadowTelemetrySchema>;

export const telemetrySchema = z.strictObject({
  v: z.literal(PROTOCOL_VERSION),
  deviceId,
  at: isoTime,
  model: z.string().nullable(),
  release: releaseSeq.nullable(),
  uptimeSeconds: z.number().min(0),
  requests: count,
  errors: count,
  latencyMs: z.strictObject({ p50: z.number().min(0).nullable(), p95: z.number().min(0).nullable() }),
  rssBytes: count,
  outbox: z.strictObject({ depth: count, bytes: count, dropped: count, evicted: count, selected: count, published: count }),
  health: z.enum(['ok', 'degraded', 'no_model']),
  /** On-device shadow figures (issue 13 item 4); sent only to a cloud accepting `telemetry.shadow`. */
  shadow: shadowTelemetrySchema.optional(),
});
export type Telemetry = z.infer<typeof telemetrySchema>;

export const REJECT_REASONS = [
  'malformed_manifest',
  'bad_signature',
  'unknown_key',
  'stale_release',
  'expired',
  'denied_hash',
  'hash_mismatch',
  'length_mismatch',
  'download_failed',
  'load_failed',
  'self_test_failed',
  'input_mismatch',
  /** More than the device's `maxSequenceJump` above its release floor (issue 10: a leaked key's huge number). */
  'sequence_jump',
  /** The signed assignment beside the manifest names another device or model (issue 10). */
  'assignment_mismatch',
] as const;
/** `crash_loop`: the release was found uncommitted at 2 starts in a row (it crashed the daemon; issue 10). */
export const ROLLBACK_REASONS = ['inference_errors', 'nan_output', 'latency_budget', 'crash_loop'] as const;

/** Semver-like: what package.json `version` holds (edge/status/agent-version.ts reads the same). */
export const agentVersion = z.string().min(1).max(40).regex(/^[0-9A-Za-z.+-]+$/, 'invalid agent version');
/** An agent release's own sequence (issue 14, shared/protocol/agent.ts). */
export const agentSeq = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);

/**
 * Why a device refused or undid an agent release (issue 14); sent as `event.agent.reason` in events of
 * type `agent_*`, which go only to a cloud accepting CLOUD_FEATURES.agentEvents.
 */
export const AGENT_REASONS = [
  'malformed_manifest',
  'bad_signature',
  'unknown_key',
  'stale_release',
  'expired',
  'wrong_platform',
  'not_upgradable',
  'protocol_too_old',
  'hash_mismatch',
  'length_mismatch',
  'download_failed',
  'listing_mismatch',
  'unpack_failed',
  'no_space',
  /** The new version exited before it was healthy (the launcher's start-time marker, or a crash loop). */
  'start_failed',
  /** The new version ran but was not healthy (broker, model, /readyz, status) within the deadline. */
  'health_timeout',
] as const;
export type AgentReason = (typeof AGENT_REASONS)[number];

/** The agent part of an `agent_*` event. */
export const agentEventSchema = z.strictObject({
  version: agentVersion,
  agentSeq: agentSeq.nullable(),
  /** The version running when the event was sent (after a rollback: the old one). */
  running: agentVersion,
  reason: z.enum(AGENT_REASONS).optional(),
});
export type AgentEvent = z.infer<typeof agentEventSchema>;

/** Event types of agent updates (issue 14); sent only to a cloud accepting CLOUD_FEATURES.agentEvents. */
export const AGENT_EVENT_TYPES = ['agent_installed', 'agent_committed', 'agent_rolled_back', 'agent_rejected'] as const;

export const eventSchema = z.strictObject({
  v: z.literal(PROTOCOL_VERSION),
  deviceId,
  at: isoTime,
  type: z.enum(['installed', 'rejected', 'rolled_back', 'committed', ...AGENT_EVENT_TYPES]),
  model: z.string().nullable(),
  release: releaseSeq.nullable(),
  sha256: sha256Hex.nullable(),
  reason: z.enum([...REJECT_REASONS, ...ROLLBACK_REASONS]).optional(),
  detail: z.string().max(1024).optional(),
  /** Set on `agent_*` events only (model, release and sha256 then describe the running model, or null). */
  agent: agentEventSchema.optional(),
});
export type DeviceEvent = z.infer<typeof eventSchema>;

/**
 * `shadow_disagreement`: the running model and a shadow candidate disagreed on it (issue 13 item 4); sent
 * only to a cloud accepting `examples.shadow-disagreement` (compat.ts exampleForCloud), else as `low_margin`.
 */
export const EXAMPLE_REASONS = ['low_confidence', 'low_margin', 'high_entropy', 'audit', 'feedback', 'shadow_disagreement'] as const;
export const MAX_EXAMPLES_PER_BATCH = 256;
export const MAX_INPUT_ELEMENTS = 1 << 20;

/** Largest source image an example may carry (bytes, before base64); devices bound theirs lower (16 KiB by default). */
export const MAX_SOURCE_IMAGE_BYTES = 256 * 1024;

/**
 * The image a hard example was computed from (issue 11), re-encoded by the device, so the teacher can
 * preprocess it its own way. Sent only to a cloud that accepts `example.source-image` (compat.ts).
 */
export const sourceImageSchema = z.strictObject({
  format: z.enum(['png', 'jpeg']),
  data: z.base64().min(1).max(Math.ceil(MAX_SOURCE_IMAGE_BYTES / 3) * 4),
});
export type SourceImage = z.infer<typeof sourceImageSchema>;

export const exampleSchema = z.strictObject({
  id: z.uuid(),
  /** base64 of little-endian float32, already scaled as the model saw it. */
  input: z.base64().max(Math.ceil((MAX_INPUT_ELEMENTS * 4) / 3) * 4),
  /** Student output as probabilities. */
  output: z.array(finite).min(1).max(4096),
  model: z.string().nullable(),
  release: releaseSeq.nullable(),
  at: isoTime,
  reason: z.enum(EXAMPLE_REASONS),
  /** A label only when a user supplied one through /v1/feedback. */
  label: z.number().int().min(0).optional(),
  /** The source image of an image model's example, when the cloud accepts it. */
  source: sourceImageSchema.optional(),
});
export type Example = z.infer<typeof exampleSchema>;

export const examplesBatchSchema = z.strictObject({
  v: z.literal(PROTOCOL_VERSION),
  deviceId,
  batchId: z.uuid(),
  examples: z.array(exampleSchema).min(1).max(MAX_EXAMPLES_PER_BATCH),
});
export type ExamplesBatch = z.infer<typeof examplesBatchSchema>;
