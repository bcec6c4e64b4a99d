import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildArtifactDescriptor, type ArtifactOptions } from '../../../shared/manifest/index.js';
import type { Manifest } from '../../../shared/protocol/index.js';

/** A small valid manifest for `bytes`; `over` replaces top-level fields. */
export function makeManifest(bytes: Uint8Array, over: Partial<Manifest> = {}, artifact: Partial<ArtifactOptions> = {}): Manifest {
  const now = Date.now();
  return {
    v: 1,
    model: 'mnist-student',
    release: 1,
    artifact: buildArtifactDescriptor(bytes, { chunkSize: 1024, quantization: 'fp32', ...artifact }),
    input: { shape: [4], dtype: 'float32', scaling: { scale: 1 / 255, offset: 0 }, raw: 'uint8' },
    output: { kind: 'logits', classes: 2 },
    labels: ['no', 'yes'],
    teacher: { id: 'teacher-1' },
    metrics: { accuracy: 0.97, agreement: 0.95 },
    lineage: { exampleCount: 100, round: 'r1' },
    parent: null,
    createdAt: new Date(now).toISOString(),
    expiresAt: new Date(now + 24 * 3600_000).toISOString(),
    selfTest: { input: [0, 0.5, 1, 0.25], expected: [0.1, 0.9], tolerance: 0.01 },
    ...over,
  };
}

/** Random "model" bytes: chunk topics are content-addressed, so random bytes keep tests apart on a shared broker. */
export function modelBytes(size = 5000): Buffer {
  return randomBytes(size);
}

export async function tempDir(prefix = 'apprentice-updates-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}
