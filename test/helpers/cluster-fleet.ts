/**
 * A small fleet in a cluster test's registry: model MODEL, releases 1 and 2 (2's parent is 1) with their
 * artifact files under `dir`/artifacts (releases.artifact_path resolves against the publisher's dataDir),
 * and `ids` online in group `lab`, running and desired release 1, declaring `manifest.shadow` (protocol 2).
 * `put` stores an artifact elsewhere instead (the registry's blobs, as `apprentice cloud` on PostgreSQL reads
 * them) and returns its artifact_path.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { StoreRegistry } from '../../cloud/registry/open.js';
import { signManifest } from '../../shared/manifest/index.js';
import { DEVICE_CAPABILITIES } from '../../shared/protocol/index.js';
import { MODEL, artifactBytes, type FleetFixture } from '../unit/fleet/fixtures.js';

export async function seedClusterFleet(reg: StoreRegistry, fx: FleetFixture, dir: string, ids: readonly string[], put?: (bytes: Buffer) => Promise<string>): Promise<void> {
  await reg.q.insert(reg.t.models).values({ name: MODEL, inputSpec: { shape: [4], dtype: 'float32', scaling: { scale: 1, offset: 0 }, raw: 'float32' }, labels: ['a', 'b'], teacher: { files: [], outputKind: 'logits' }, studentSpec: 'mlp', distillSettings: {} });
  mkdirSync(join(dir, 'artifacts'), { recursive: true });
  for (const [seq, parent] of [
    [1, null],
    [2, 1],
  ] as const) {
    const bytes = artifactBytes(seq);
    const m = fx.manifest(seq, bytes, { parent });
    const signed = signManifest(m, fx.key);
    let artifactPath = `artifacts/${m.artifact.sha256}.onnx`;
    if (put) artifactPath = await put(bytes);
    else writeFileSync(join(dir, artifactPath), bytes);
    await reg.q.insert(reg.t.releases).values({ model: MODEL, seq, sha256: m.artifact.sha256, bytes: bytes.byteLength, quantization: 'fp32', metrics: m.metrics, manifest: signed.manifest, signature: signed.signature, parentSeq: parent, artifactPath });
  }
  const at = new Date().toISOString();
  await reg.q.insert(reg.t.devices).values(ids.map((id) => ({ id, groups: ['lab'], credentialHash: 'x', online: true, runningSeq: 1, desiredSeq: 1, lastSeen: at, protocolVersion: 2, capabilities: [DEVICE_CAPABILITIES.shadow] })));
}
