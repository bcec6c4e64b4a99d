import { join } from 'node:path';
import { Counter, type Registry as PromRegistry } from 'prom-client';
import type { Logger } from '../../shared/log/index.js';
import type { StoreRegistry } from '../registry/open.js';
import { fileBlobs } from './file-blobs.js';
import { registryBlobs } from './registry-blobs.js';
import { blobArtifactStore, fileArtifactStore } from './served.js';
import type { ArtifactBlobs, ArtifactStore, PutRefusal } from './types.js';

export * from './types.js';
export { FILE_STORE_DIRS, fileRelPath } from './file-blobs.js';
export { artifactRef, artifactRefsIn, resolveArtifactRefs, storeFilesAsRefs } from './refs.js';
export { fileArtifactStore, blobArtifactStore } from './served.js';

export interface Artifacts {
  /** Bytes by kind and sha256, for the cloud's writers (rounds, uploads, agent pushes, teacher files, datasets) and readers. */
  blobs: ArtifactBlobs;
  /** What `GET /v1/artifacts/{sha256}` serves (createCloudApi's `artifacts.store`). */
  served: ArtifactStore;
  /** Deletes chunks of puts that never finished (registry store; the file store has nothing to sweep). */
  sweep(olderThan: Date): Promise<number>;
}

export interface OpenArtifactsOptions {
  registry: StoreRegistry;
  /** The cloud's data dir: files on the file store, this replica's cache of registry blobs under cache/artifacts. */
  dataDir: string;
  log: Logger;
  /** Where `apprentice_artifact_put_refused_total{reason}` is registered. */
  metrics?: PromRegistry;
  /** Default: `registry` on PostgreSQL (every replica reaches it), `file` on SQLite. */
  backend?: 'file' | 'registry';
  /** Registry chunk size (tests). */
  chunkBytes?: number;
}

/**
 * The one place the artifact store is chosen (issue 15 item 3): with `registry.url` (PostgreSQL) artifacts live
 * in the registry, so no replica depends on another's disk; with SQLite they stay files under the data dir.
 *
 * @example
 * const artifacts = openArtifacts({ registry, dataDir, log, metrics });
 * const { sha256, relPath } = await artifacts.blobs.put('model', bytes);
 * createCloudApi({ ..., artifacts: { store: artifacts.served } });
 */
export function openArtifacts(o: OpenArtifactsOptions): Artifacts {
  const backend = o.backend ?? (o.registry.dialect === 'postgres' ? 'registry' : 'file');
  const counter = o.metrics
    ? ((o.metrics.getSingleMetric('apprentice_artifact_put_refused_total') as Counter<'reason'> | undefined) ??
      new Counter({ name: 'apprentice_artifact_put_refused_total', help: 'Artifact puts refused, nothing stored, by reason (bad_sha256, sha256_mismatch, length_mismatch)', labelNames: ['reason'] as const, registers: [o.metrics] }))
    : undefined;
  const refused = (reason: PutRefusal) => counter?.inc({ reason });
  if (backend === 'file') {
    return {
      blobs: fileBlobs({ dataDir: o.dataDir, log: o.log, refused }),
      served: fileArtifactStore({ registry: o.registry, artifactsDir: o.dataDir, log: o.log }),
      sweep: async () => 0,
    };
  }
  const blobs = registryBlobs({ registry: o.registry, cacheDir: join(o.dataDir, 'cache', 'artifacts'), log: o.log, refused, chunkBytes: o.chunkBytes });
  return { blobs, served: blobArtifactStore({ registry: o.registry, blobs, log: o.log }), sweep: (d) => blobs.sweepOrphans(d) };
}
