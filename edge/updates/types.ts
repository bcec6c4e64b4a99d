import type { MqttClient } from 'mqtt';
import type { Logger } from '../../shared/log/index.js';
import type { TrustedKey } from '../../shared/manifest/index.js';
import type { TimeFloor } from './time-floor.js';
import type { DeviceEvent, InputSpec, Manifest, REJECT_REASONS, ROLLBACK_REASONS } from '../../shared/protocol/index.js';

export type RejectReason = (typeof REJECT_REASONS)[number];
export type RollbackReason = (typeof ROLLBACK_REASONS)[number];
export type ActivationFailure = Extract<RejectReason, 'load_failed' | 'self_test_failed'>;

/**
 * What the update pipeline needs from the inference runtime (implemented by edge/runtime).
 */
export interface ModelHost {
  /**
   * Create a new ORT session for the file, run `manifest.selfTest`, then atomically switch;
   * in-flight requests finish on the old session. Throws an Error with
   * `reason: 'load_failed' | 'self_test_failed'` (see {@link ActivationError}); any other error is
   * treated as `load_failed`. On a throw, the previously active model must still be serving.
   */
  activate(path: string, manifest: Manifest): Promise<void>;
}

/** The error a {@link ModelHost} throws when a model cannot be switched to. */
export class ActivationError extends Error {
  override readonly name = 'ActivationError';
  constructor(
    readonly reason: ActivationFailure,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** Receives device events (installed / rejected / rolled_back); the daemon publishes them on `devices/{id}/events`. */
export type EmitEvent = (event: DeviceEvent) => void | Promise<void>;

/** A failure of the update pipeline with its protocol reason code. */
export class UpdateError extends Error {
  override readonly name = 'UpdateError';
  constructor(
    readonly reason: RejectReason,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** What is installed in a slot: the content address and the signed payload exactly as received. */
export interface SlotRecord {
  sha256: string;
  /** The `desired` payload as received (`{ manifest, signature }`), so it can be re-verified later. */
  signed: { manifest: unknown; signature: { alg: 'ed25519'; keyId: string; sig: string } };
}

/** What the host was last switched to by the update pipeline. */
export interface RunningModel {
  model: string;
  release: number;
  sha256: string;
}

export type RestoreOutcome = { status: 'restored'; from: 'current' | 'previous'; release: number; sha256: string } | { status: 'none' };

export type RollbackOutcome =
  | { status: 'rolled_back'; to: { release: number; sha256: string } }
  | { status: 'no_previous' | 'previous_failed' | 'not_current'; detail: string };

export interface UpdateManagerDeps {
  deviceId: string;
  dataDir: string;
  /**
   * Keys releases may be signed with: edge.json's, or a function returning the live keys of the
   * accepted key set (TrustStore), read at every verification.
   */
  trustedKeys: TrustedKeysSource;
  host: ModelHost;
  /** Receives installed / rejected / rolled_back events; the daemon publishes them. */
  emit: EmitEvent;
  /** The daemon's MQTT client, for retained artifact chunks. */
  mqtt?: MqttClient;
  log?: Logger;
  now?: () => Date;
  /**
   * The persisted time floor (issue 10): when given, every time check uses max(clock, floor) and an
   * installed manifest's `createdAt` raises it. `now` is then ignored (the floor has its own clock).
   */
  timeFloor?: TimeFloor;
  /**
   * Before refusing a manifest as `unknown_key`: resolves when the key set of this connection has
   * arrived or 30 s after the connect (KeySetFollower.keySetSettled); the manifest is then verified again.
   */
  keySetSettled?: () => Promise<void>;
  /** Key ids revoked by the accepted key set (TrustStore); see RecoveryDeps.revokedKeys. */
  revokedKeys?: () => Iterable<string>;
  /** Refuse a release more than this above the release floor (`sequence_jump`). Default 1,000,000. */
  maxSequenceJump?: number;
  /** Refuse a `desired` without a signed assignment (`assignment_mismatch`); default false (older clouds send none). */
  requireAssignment?: boolean;
  /** When set, a manifest with another input shape or dtype is refused (`input_mismatch`). */
  expectedInput?: Pick<InputSpec, 'shape' | 'dtype'>;
  mqttIdleTimeoutMs?: number;
  httpIdleTimeoutMs?: number;
  fetchImpl?: typeof fetch;
  /** Sent as HTTP Basic to the manifest's HTTP source (the cloud's /v1/artifacts checks them): the MQTT username and password. */
  httpCredentials?: HttpCredentials;
  /** Retry after `download_failed` with jittered exponential backoff (the outbox's createBackoff: delay in [c/2, c), c doubling from initialMs to maxMs); `false` disables. Default 30 s → 15 min. */
  retry?: { initialMs: number; maxMs: number } | false;
  /**
   * Where `manifest.shadow` releases run (edge/shadow ShadowRunner). Without it such a release is
   * ignored: a daemon declares the `manifest.shadow` capability only when it has one.
   */
  shadow?: ShadowTarget;
}

/** What the update pipeline needs from the shadow runner (edge/shadow/runner.ts satisfies it). */
export interface ShadowTarget {
  readonly sha256: string | undefined;
  load(path: string, manifest: Manifest): Promise<void>;
  drop(reason: 'switched' | 'superseded' | 'expired'): Promise<void>;
  onDropped(fn: (sha256: string) => void): void;
}

export const DEFAULT_MAX_SEQUENCE_JUMP = 1_000_000;
export interface HttpCredentials {
  username: string;
  password: string;
}

export type UpdateOutcome =
  | { status: 'installed'; release: number; sha256: string }
  /** A `manifest.shadow` release now runs beside the served model (issue 13 item 4); the floor did not move. */
  | { status: 'shadowing'; release: number; sha256: string }
  | { status: 'rejected'; reason: RejectReason; detail: string }
  | { status: 'ignored'; detail: string }
  | { status: 'superseded'; by: number };

/** A fixed list, or a function read at each verification (the key set changes while running). */
export type TrustedKeysSource = readonly TrustedKey[] | (() => readonly TrustedKey[]);

export function keysOf(src: TrustedKeysSource): readonly TrustedKey[] {
  return typeof src === 'function' ? src() : src;
}
