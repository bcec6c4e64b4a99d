import type { Manifest, SignedManifest } from '../../shared/protocol/schemas.js';
import type { ModelRow } from '../registry/schema.js';
import type { Schedule } from './settings.js';

/**
 * Structural types of what rounds need from other modules (signing keys, the MQTT publisher, the
 * rollout engine) and the messages between the round runner and its worker process. Structural on
 * purpose: cloud/keys, cloud/fleet and cloud/rollouts satisfy them without importing this folder.
 */

/** Signs release manifests; the cloud's KeyStore provides it. May be async (e.g. a remote KMS). */
export interface ManifestSigner {
  sign(manifest: Manifest): SignedManifest | Promise<SignedManifest>;
}

/** Synchronous signer, as `reissueRelease` needs it inside one registry transaction. */
export interface SyncManifestSigner {
  sign(manifest: Manifest): SignedManifest;
}

/** Publishes an artifact's retained chunks (cloud/fleet publisher). */
export interface ArtifactPublisher {
  publishArtifact(sha256: string, bytes: Uint8Array, chunkSize: number): Promise<unknown>;
}

/** What a round asks the rollout engine for when the model's schedule says `autoRollout` (cloud/rollouts rolloutRequestSchema, which is strict: no extra keys). */
export interface RolloutRequest {
  model: string;
  releaseSeq: number;
  target: Schedule['rollout']['target'];
  canaryShare: number;
  soakSeconds: number;
  failureThreshold: number;
}

/** cloud/rollouts RolloutEngine, structurally. */
export interface RolloutStarter {
  create(input: RolloutRequest): Promise<unknown>;
}

export const ROUND_STATES = ['queued', 'running', 'released', 'rejected', 'failed'] as const;
export type RoundState = (typeof ROUND_STATES)[number];
export const FINAL_ROUND_STATES: readonly RoundState[] = ['released', 'rejected', 'failed'];
export type RoundTrigger = 'manual' | 'schedule' | 'retry';

/** Live progress of a round, as stored in `rounds.progress`. */
export interface RoundProgress {
  phase: RoundPhase;
  detail?: string;
  epoch?: number;
  epochs?: number;
  loss?: number;
  samplesPerSec?: number;
  at: string;
}
export type RoundPhase = 'starting' | 'transfer-set' | 'teacher' | 'train' | 'evaluate' | 'gate' | 'export' | 'sign' | 'store' | 'publish' | 'rollout' | 'done';

/** A second round for a model while one is queued or running. The API maps it to 409. */
export class RoundConflictError extends Error {
  override readonly name = 'RoundConflictError';
  constructor(
    readonly model: string,
    readonly activeRoundId: string,
  ) {
    super(`model ${model} already has round ${activeRoundId} in progress`);
  }
}

export class UnknownModelError extends Error {
  override readonly name = 'UnknownModelError';
  constructor(readonly model: string) {
    super(`unknown model ${model}`);
  }
}

/**
 * Where the worker opens the registry (issue 15): the same `{ url }` (PostgreSQL) or `{ path }` (SQLite
 * file) the cloud opened, given to cloud/registry/open.ts openRegistry.
 */
export type RegistryLocation = { url: string } | { path: string };

/** Sent to the worker once, right after fork. Plain JSON. */
export interface RoundJob {
  roundId: string;
  registry: RegistryLocation;
  dataDir: string;
  model: ModelRow;
  /** `${publicBaseUrl}/v1/releases/${seq}/artifact` goes into the manifest when set. */
  publicBaseUrl?: string;
  /** tfjs backend for the worker (default: auto). */
  backend?: 'auto' | 'tensorflow' | 'wasm' | 'cpu';
  /**
   * The cluster leader epoch the round was launched under (issue 15 item 4; absent without a cluster): the
   * worker stores its release only in a transaction fenced on it (fenced-store.ts).
   */
  epoch?: number;
}

/** Metrics of a round (rounds.metrics); the numeric subset goes into the manifest. */
export type RoundMetrics = Record<string, unknown>;

/** What one release line of a round came to (issue 13: the base line, cohort null, and one per cohort). */
export type LineOutcome =
  | { state: 'released'; cohort?: string | null; releaseSeq: number; sha256: string; artifactPath: string; chunkSize: number; exampleCount: number; metrics: RoundMetrics }
  | { state: 'rejected'; cohort?: string | null; reason: string; exampleCount: number; metrics: RoundMetrics };

/** The base line's outcome (the round's state), and the cohort lines' outcomes when the model has cohorts. */
export type RoundOutcome = LineOutcome & { cohorts?: LineOutcome[] };

export type ParentMessage =
  | { type: 'job'; job: RoundJob }
  /** The release sequence the parent allocated to one line of this round (the same one on every request for that line). */
  | { type: 'sequence'; requestId: number; seq: number }
  | { type: 'signed'; requestId: number; signed: SignedManifest }
  /** A refused `sign` or `sequence` request, with the reason. */
  | { type: 'sign-failed'; requestId: number; message: string };

/**
 * Worker → parent. The worker signs nothing on its own say (issue 10 item 9): it asks for its round's
 * sequence, stores the artifact under the data dir, then asks once for a manifest for that sequence,
 * that model and the stored file's sha256; the parent checks all three before signing.
 */
export type WorkerMessage =
  | { type: 'progress'; progress: RoundProgress }
  /** `cohort` absent or null: the base line (issue 13: one sequence per release line). */
  | { type: 'sequence'; requestId: number; cohort?: string | null }
  | { type: 'sign'; requestId: number; manifest: Manifest }
  | { type: 'done'; outcome: RoundOutcome }
  | { type: 'error'; message: string; stack?: string };

/** What `get(id)` returns: the row with the live progress of a running round. */
export interface RoundView {
  id: string;
  model: string;
  state: RoundState;
  trigger: string;
  progress: RoundProgress | null;
  metrics: RoundMetrics | null;
  error: string | null;
  releaseSeq: number | null;
  exampleCount: number | null;
  attempts: number;
  startedAt: string | null;
  finishedAt: string | null;
  createdAt: string;
}

/** The interface the HTTP API uses. */
export interface RoundsService {
  start(model: string, trigger: RoundTrigger): Promise<{ id: string }>;
  get(id: string): Promise<RoundView | undefined>;
  list(model?: string, limit?: number): Promise<RoundView[]>;
}
