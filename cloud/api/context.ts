import type { Context } from 'hono';
import type { ArtifactBlobs, ArtifactStore } from './artifact-store.js';
import type { SignedKeySet } from '../../shared/protocol/index.js';
import type { Logger } from '../../shared/log/index.js';
import type { KeyStore } from '../keys/store.js';
import type { StoreRegistry } from '../registry/open.js';
import type { RetentionConfig } from '../registry/retention-job.js';
import type { CloudApiLimits, FleetHooks, RolloutsService, RoundsService, ShadowService, UploadHooks } from './types.js';

/** Shared by the resource apps; built once by `createCloudApi`. */
export interface ApiContext {
  /** The registry of either dialect (SQLite or PostgreSQL): `q`/`t` for single statements, `tx` for transaction bodies. */
  registry: StoreRegistry;
  keys: KeyStore;
  broker: { publicUrl: string };
  rounds: RoundsService;
  rollouts: RolloutsService;
  shadow: ShadowService | undefined;
  fleet: FleetHooks | undefined;
  artifactsDir: string;
  /**
   * The artifact store when it is the registry (PostgreSQL, issue 15): uploads and agent pushes are stored
   * there and release artifacts read from it by sha256; undefined = files under artifactsDir.
   */
  blobs: ArtifactBlobs | undefined;
  /** The device-authenticated artifact route (artifacts.ts). */
  artifacts: {
    store: ArtifactStore;
    adminToken: string;
    trustedProxies: readonly string[];
    clientAddress: (c: Context) => string | undefined;
    /** Counts a refused request (`apprentice_cloud_artifact_refused_total{reason}`). */
    refused: (reason: 'insecure_transport' | 'unauthorized') => void;
  };
  /** The published root-signed key set (cloud/keys/keyset-file.ts) and its upload. */
  trust: {
    published(): SignedKeySet | undefined;
    /** Checks and stores a signed key set (same rules as a device); throws UsageError when refused. */
    publish(signed: unknown): { version: number; path: string };
  };
  ingestCounts: () => Record<string, { deferred: number; refused: number; labelsIgnored: number }>;
  limits: CloudApiLimits;
  uploads: UploadHooks;
  /** Example retention limits (shown by /v1/examples/stats); undefined = none configured. */
  retention: RetentionConfig | undefined;
  clock: () => Date;
  /** Counts an audit entry that could not be written (`apprentice_audit_write_failed_total{source="api"}`). */
  auditFailed: () => void;
  log: Logger;
}

export const DEFAULT_LIMITS: CloudApiLimits = {
  maxBodyBytes: 1024 * 1024,
  maxUploadBytes: 256 * 1024 * 1024,
  maxConcurrentUploads: 2,
  exportBatchRows: 500,
};

