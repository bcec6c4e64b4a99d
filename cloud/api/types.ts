import type { Context } from 'hono';
import type { Registry as PromRegistry } from 'prom-client';
import type { ArtifactBlobs, ArtifactStore } from './artifact-store.js';
import type { Logger } from '../../shared/log/index.js';
import type { KeyStore } from '../keys/store.js';
import type { StoreRegistry } from '../registry/open.js';
import type { RolloutRow, ShadowDeviceRow, ShadowRunRow } from '../registry/schema.js';
import type { RetentionConfig } from '../registry/retention-job.js';

/**
 * What the cloud API needs from the other cloud modules, as structural interfaces: cloud/rounds'
 * RoundRunner and cloud/rollouts' RolloutEngine satisfy them as they are (checked at compile time in
 * contracts.ts). The API maps the typed errors below, and the ones those modules throw (RoundConflictError,
 * UnknownModelError, RoundConfigError, RolloutError), to 404/409/422; anything else is a logged 500.
 */
type Awaitable<T> = T | Promise<T>;

/** Starts distillation rounds (cloud/rounds). */
export interface RoundsService {
  /**
   * Queues a round for `model` (which the API has checked exists) and returns its id at once; progress
   * is read from the registry's `rounds` table. Throws RoundInProgressError when one is already queued
   * or running for that model.
   */
  start(model: string, trigger: 'manual'): Awaitable<{ id: string }>;
}

/** Who a rollout is for; stored as-is in `rollouts.target`. */
export type RolloutTarget = { kind: 'all' } | { kind: 'group'; group: string } | { kind: 'devices'; ids: string[] };

export interface CreateRolloutInput {
  /** A model, or `agent:<platform>` with kind `agent` (issue 14). */
  model: string;
  /** Default `model`; for `agent`, releaseSeq is an agentSeq. */
  kind?: 'model' | 'agent';
  /** Checked by the API: exists and belongs to `model`. */
  releaseSeq: number;
  target: RolloutTarget;
  /** Cumulative shares of the target per wave; the first wave is the canaries. */
  waves?: number[];
  /** 0..1: the same as `waves: [canaryShare, 1]`. */
  canaryShare?: number;
  /** How long each wave's installed devices must stay healthy before the next wave. */
  soakSeconds: number;
  /** Roll back when failed ≥ max(minFailures, ceil(failureThreshold × settled)). */
  failureThreshold: number;
  /** Agreement gate (issue 13): held back when the paired upper bound of candidate − running accuracy < −margin. */
  agreementMargin?: number;
  minFailures?: number;
  deviceTimeoutSeconds?: number;
  canaryGraceSeconds?: number;
}

/** Rollouts (the cloud/rollouts RolloutEngine). */
export interface RolloutsService {
  /** Throws RolloutConflictError (e.g. another active rollout of the model) or RolloutRequestError (e.g. target matches no device). */
  create(input: CreateRolloutInput): Promise<RolloutRow>;
  /** Throws RolloutNotFoundError, or RolloutConflictError when the rollout already finished. */
  abort(id: string, reason: string): Promise<unknown>;
  /** Re-issues the previous release to the rollout's devices. Same errors as `abort`. */
  rollback(id: string): Promise<unknown>;
  /** Stops waves, replacements and device timeouts where they are. Conflict when not active or already paused. */
  pause(id: string, reason: string): Promise<unknown>;
  /** Conflict when not paused. */
  resume(id: string): Promise<unknown>;
  /** The row, or a view holding it (the RolloutEngine answers `{ rollout, devices, counts, ... }`). */
  get(id: string): Awaitable<RolloutRow | { rollout: RolloutRow } | undefined>;
  /** Newest first. */
  list(): Awaitable<RolloutRow[]>;
}

/** On-device shadow runs (cloud/shadow ShadowRollouts, issue 13 item 4); structural, so the API does not import it. */
export interface ShadowService {
  /** Throws RolloutError (not_found, invalid). */
  create(input: { model: string; releaseSeq: number; target: RolloutTarget; policy: Omit<CreateRolloutInput, 'model' | 'releaseSeq' | 'target'>; minutes: number; autoSwitch?: boolean; minAgreement?: number; minRequests?: number }): Promise<{ id: string }>;
  get(id: string): Promise<ShadowViewLike | undefined>;
  forRollout(rolloutId: string): Promise<ShadowViewLike | undefined>;
  /** Throws RolloutError (not_found; conflict when the run is no longer shadowing). */
  switch(id: string, reason?: string): Promise<unknown>;
  abort(id: string, reason?: string): Promise<unknown>;
}

/** What cloud/shadow's ShadowView holds, as the API reads it. */
export interface ShadowViewLike {
  run: ShadowRunRow;
  devices: ShadowDeviceRow[];
  decision: { switch: boolean; reason: string; devices: { deviceId: string; verdict: string; agreement: number | null; detail?: string }[] };
}

/** Optional hooks into the fleet (cloud/fleet), called after the registry changed. Failures are logged, never undo the change. */
export interface FleetHooks {
  onDeviceProvisioned(id: string, groups: string[]): Promise<void>;
  /** E.g. clear the retained `desired`, cancel rollout entries, tell the operator to reload the broker. */
  onDeviceRevoked(id: string): Promise<void>;
}

export interface UploadHooks {
  publicBaseUrl?: string;
  /** Publishes the release's chunks (and starts an auto-rollout); returns the problems, never throws for them. */
  publish?(seq: number): Promise<string[]>;
  /** Where `apprentice_cloud_release_uploads_total{result}` is registered (the cloud's /metrics registry). */
  metrics?: PromRegistry;
}

export interface CloudApiLimits {
  /** Request bodies above this are refused with 413 (default 1 MiB). */
  maxBodyBytes: number;
  /** Rows per page of the examples CSV export query (memory bound of the stream). */
  exportBatchRows: number;
  /** ONNX uploads (POST /v1/models/{name}/releases) above this are refused with 413 (default 256 MiB). */
  maxUploadBytes: number;
  /** ONNX uploads processed at once; one more gets 503 `uploads_busy` with Retry-After (default 2). */
  maxConcurrentUploads: number;
}

export interface CloudApiDeps {
  registry: StoreRegistry;
  keys: KeyStore;
  /** Bearer token for every route but /healthz and /openapi.json. */
  adminToken: string;
  /** The MQTT URL devices should use (goes into provisioning bundles). */
  broker: { publicUrl: string };
  rounds: RoundsService;
  rollouts: RolloutsService;
  /** This replica's role and leader epoch for /healthz (cloud/cluster/replica.ts); default single, epoch null. */
  replicaRole?: () => { role: 'single' | 'leader' | 'follower' | 'stopped'; epoch: number | null };
  /** On-device shadow runs (`POST /v1/rollouts` with `shadow`); without it such a request is refused (422). */
  shadow?: ShadowService;
  fleet?: FleetHooks;
  /** Release artifacts live under here; `releases.artifact_path` is resolved against it and must stay inside. */
  artifactsDir: string;
  /** `GET /v1/artifacts/{sha256}` (device-authenticated). */
  artifacts?: {
    /** Default: the registry's release files under artifactsDir. */
    store?: ArtifactStore;
    /** Where uploads and agent pushes are stored and release artifacts read (cloud/artifacts openArtifacts); default files under artifactsDir. */
    blobs?: ArtifactBlobs;
    /** Proxy addresses whose `X-Forwarded-Proto: https` is believed (api.trustedProxies). */
    trustedProxies?: readonly string[];
    /** The request's TCP peer; default the node socket's remote address (tests override it). */
    clientAddress?: (c: Context) => string | undefined;
  };
  /** Where the published key set lives (the cloud's data dir); default artifactsDir. */
  trustDir?: string;
  /**
   * The key store is shared by several replicas (keys.sharedDir): the key set is published there with the CLI,
   * so `PUT /v1/keys/keyset` is refused (409 keyset_shared) rather than written by one replica.
   */
  sharedKeys?: boolean;
  /** Called after a key set was uploaded (the cloud retains it on trust/keyset at once). */
  onKeySetPublished?: () => void;
  /** Per-device deferred / refused counts of ingest, kept across restarts (Ingest.deviceCounts), for /v1/examples/stats. */
  ingestCounts?: () => Record<string, { deferred: number; refused: number; labelsIgnored: number }>;
  limits?: Partial<CloudApiLimits>;
  /** For uploaded releases: the HTTP artifact base URL, and the publish step distilled releases go through. */
  uploads?: UploadHooks;
  /** Example retention limits, for /v1/examples/stats (the cloud's `retention` config). */
  retention?: RetentionConfig;
  clock?: () => Date;
  log?: Logger;
  /** The web console at /ui/ (cloud/ui); on unless false. */
  console?: false | { sessionTtlSeconds?: number; liveIntervalMs?: number; loginFailuresPerMinute?: number; /** How long the overview's fleet summary is shared; default 2000 ms. */ summaryTtlMs?: number };
}

/** Thrown by RoundsService.start when the model already has a queued or running round. → 409 `round_in_progress`. */
export class RoundInProgressError extends Error {
  override readonly name = 'RoundInProgressError';
  constructor(readonly model: string, readonly roundId?: string) {
    super(`model ${model} already has a round in progress${roundId ? ` (${roundId})` : ''}`);
  }
}

/** The rollout does not exist. → 404 `rollout_not_found`. */
export class RolloutNotFoundError extends Error {
  override readonly name = 'RolloutNotFoundError';
  constructor(readonly rolloutId: string) {
    super(`no rollout ${rolloutId}`);
  }
}

/** The rollout's state forbids the operation (finished, another one active, ...). → 409 `rollout_conflict`. */
export class RolloutConflictError extends Error {
  override readonly name = 'RolloutConflictError';
}

/** A well-formed request the engine cannot act on (e.g. no device matches the target). → 422 `invalid_rollout`, naming `field`. */
export class RolloutRequestError extends Error {
  override readonly name = 'RolloutRequestError';
  constructor(message: string, readonly field?: string) {
    super(message);
  }
}
