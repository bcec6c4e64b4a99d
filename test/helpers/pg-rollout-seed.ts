/**
 * A registry of either dialect seeded for rollout tests that run the engine on a registry other than the
 * FleetFixture's own SQLite file (cluster tests on PostgreSQL): the fixture's model, signed releases 1 and
 * 2 (2's parent is 1) with their artifacts under `dataDir/artifacts`, and `devices` online running 1.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { StoreRegistry } from '../../cloud/registry/open.js';
import { signManifest } from '../../shared/manifest/index.js';
import { MODEL, artifactBytes, type FleetFixture } from '../unit/fleet/fixtures.js';

export async function seedRolloutRegistry(reg: StoreRegistry, fx: FleetFixture, dataDir: string, devices: readonly string[]): Promise<void> {
  await reg.q.insert(reg.t.models).values({ name: MODEL, inputSpec: { shape: [4], dtype: 'float32', scaling: { scale: 1, offset: 0 }, raw: 'float32' }, labels: ['a', 'b'], teacher: { files: [], outputKind: 'logits' }, studentSpec: 'mlp', distillSettings: {} });
  mkdirSync(join(dataDir, 'artifacts'), { recursive: true });
  for (const [seq, parent] of [
    [1, null],
    [2, 1],
  ] as const) {
    const bytes = artifactBytes(seq);
    const m = fx.manifest(seq, bytes, { parent });
    const signed = signManifest(m, fx.key);
    const artifactPath = `artifacts/${m.artifact.sha256}.onnx`;
    writeFileSync(join(dataDir, artifactPath), bytes);
    await reg.q.insert(reg.t.releases).values({ model: MODEL, seq, sha256: m.artifact.sha256, bytes: bytes.byteLength, quantization: 'fp32', metrics: m.metrics, manifest: signed.manifest, signature: signed.signature, parentSeq: parent, artifactPath });
  }
  const at = new Date().toISOString();
  await reg.q.insert(reg.t.devices).values(devices.map((id) => ({ id, groups: ['lab'], credentialHash: 'x', online: true, runningSeq: 1, desiredSeq: 1, lastSeen: at })));
}
