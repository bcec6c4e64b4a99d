import type * as tf from '@tensorflow/tfjs';
import { eq } from 'drizzle-orm';
import { ArtifactUnavailableError, type ArtifactBlobs } from '../artifacts/types.js';
import { loadPackedWeightsInto, loadWeightsInto, packWeights, saveWeights, type WarmStartResult } from '../distill/warm-start.js';
import type { StoreRegistry } from '../registry/open.js';
import { weightsBasePath } from './store.js';

/**
 * Where a release's student weights live, for the next round's warm start (issue 15 item 2):
 * - SQLite (file store, one process): `artifacts/{release sha256}.weights.{bin,json}` under the data dir, as before;
 * - PostgreSQL (registry store): one packed blob in the artifact store, found through the meta row
 *   `warm-start:{release sha256}` → weights sha256, so a round on any replica warm-starts from it.
 * Weights that cannot be found or read never fail a round: the caller trains from scratch with the reason.
 */
export interface WeightsPlace {
  dataDir: string;
  registry: StoreRegistry;
  /** The artifact store; weights go to the registry only when it is the registry store. */
  blobs?: ArtifactBlobs;
}

/** The meta key naming the weights blob of the release whose artifact is `releaseSha256`. */
export const warmStartKey = (releaseSha256: string): string => `warm-start:${releaseSha256}`;

const inRegistry = (p: WeightsPlace): p is WeightsPlace & { blobs: ArtifactBlobs } => p.blobs?.backend === 'registry';

/** Saves `model`'s weights as the warm start of the release `releaseSha256` (blob first, then the meta row naming it). */
export async function saveReleaseWeights(p: WeightsPlace, releaseSha256: string, model: tf.LayersModel, arch: string): Promise<void> {
  if (!inRegistry(p)) return saveWeights(model, weightsBasePath(p.dataDir, releaseSha256), arch);
  const { sha256 } = await p.blobs.put('model', packWeights(model, arch));
  const { meta } = p.registry.t;
  await p.registry.q
    .insert(meta)
    .values({ key: warmStartKey(releaseSha256), value: sha256 })
    .onConflictDoUpdate({ target: meta.key, set: { value: sha256 } });
}

/** Loads the warm start of the release `releaseSha256` into `model` when there is one and it fits. */
export async function loadReleaseWeights(p: WeightsPlace, releaseSha256: string, model: tf.LayersModel, arch: string): Promise<WarmStartResult> {
  if (!inRegistry(p)) return loadWeightsInto(model, weightsBasePath(p.dataDir, releaseSha256), arch);
  const { meta } = p.registry.t;
  const [row] = await p.registry.q.select({ value: meta.value }).from(meta).where(eq(meta.key, warmStartKey(releaseSha256)));
  if (!row) return { loaded: false, reason: `parent weights unavailable (none stored for release ${releaseSha256.slice(0, 12)})` };
  let packed: Uint8Array;
  try {
    packed = await p.blobs.readAll('model', row.value);
  } catch (err) {
    if (err instanceof ArtifactUnavailableError) return { loaded: false, reason: `parent weights unavailable (${err.message})` };
    throw err;
  }
  return loadPackedWeightsInto(model, packed, arch);
}
