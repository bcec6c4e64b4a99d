import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Registry } from '../../../cloud/registry/db.js';
import { meta, releases } from '../../../cloud/registry/schema.js';
import { buildReleaseManifest } from '../../../cloud/rounds/manifest.js';
import { allocateReleaseSeq, currentRelease, insertRelease, reissueRelease, RELEASE_SEQ_HIGH, ReleaseError } from '../../../cloud/rounds/releases.js';
import { manifestSchema } from '../../../shared/protocol/schemas.js';
import { verifyManifest } from '../../../shared/manifest/index.js';
import { denseModel } from '../../fixtures/onnx-models.js';
import { DIGITS, MNIST_INPUT_SPEC, TestSigner, insertModel, openRegistry, tempDir } from './helpers.js';

describe('release sequence', () => {
  let tmp: ReturnType<typeof tempDir>;
  let registry: Registry;
  beforeEach(() => {
    tmp = tempDir();
    registry = openRegistry(tmp.dir);
  });
  afterEach(() => {
    registry.dispose();
    tmp.cleanup();
  });

  it('is monotonic and never reused, across reopen and deleted rows', () => {
    expect([allocateReleaseSeq(registry), allocateReleaseSeq(registry), allocateReleaseSeq(registry)]).toEqual([1, 2, 3]);
    registry.dispose();
    registry = openRegistry(tmp.dir);
    expect(allocateReleaseSeq(registry)).toBe(4);
    // A release row above the recorded high (e.g. imported) moves the sequence past it.
    insertModel(registry);
    const signer = new TestSigner();
    const m = signer.sign(sampleManifest(10));
    insertRelease(registry, { model: 'mnist', seq: 10, sha256: m.manifest.artifact.sha256, bytes: 1, quantization: 'fp32', metrics: {}, manifest: m.manifest, signature: m.signature, artifactPath: 'x' });
    expect(allocateReleaseSeq(registry)).toBe(11);
    registry.db.delete(releases).run();
    expect(allocateReleaseSeq(registry)).toBe(12);
    expect(registry.db.select().from(meta).where(eq(meta.key, RELEASE_SEQ_HIGH)).get()!.value).toBe('12');
  });

  it('is safe between two connections to the same file (cloud and worker)', () => {
    const other = Registry.open(registry.sqlite.name);
    try {
      const seen = Array.from({ length: 20 }, (_, i) => allocateReleaseSeq(i % 2 ? other : registry));
      expect(seen).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    } finally {
      other.dispose();
    }
  });

  it('reissues an earlier release under a higher sequence with a fresh signature', () => {
    insertModel(registry);
    const signer = new TestSigner();
    const now = new Date('2030-01-01T00:00:00.000Z');
    for (const seq of [1, 2]) {
      const s = allocateReleaseSeq(registry);
      const signed = signer.sign(sampleManifest(s, seq === 2 ? 1 : null, 'https://cloud.example'));
      insertRelease(registry, { model: 'mnist', seq: s, sha256: signed.manifest.artifact.sha256, bytes: signed.manifest.artifact.bytes, quantization: 'fp32', metrics: { holdoutAccuracy: 0.9 + s / 100 }, manifest: signed.manifest, signature: signed.signature, parentSeq: s === 2 ? 1 : null, artifactPath: `artifacts/${s}.onnx` });
    }
    const seq = reissueRelease(registry, signer, 1, { now });
    expect(seq).toBe(3);
    const row = currentRelease(registry, 'mnist')!;
    expect(row).toMatchObject({ seq: 3, parentSeq: 2, artifactPath: 'artifacts/1.onnx', roundId: null, metrics: { holdoutAccuracy: 0.91, reissueOf: 1 } });
    const v = verifyManifest({ manifest: row.manifest, signature: row.signature }, signer.trusted);
    if (!v.ok) throw new Error(v.detail);
    expect(v.manifest).toMatchObject({ release: 3, parent: 2, lineage: { reissueOf: 1, exampleCount: 7 }, createdAt: now.toISOString(), expiresAt: '2030-01-31T00:00:00.000Z' });
    expect(v.manifest.artifact.url).toBe(`https://cloud.example/v1/artifacts/${v.manifest.artifact.sha256}`);
    expect(reissueRelease(registry, signer, 3)).toBe(4);
    expect(() => reissueRelease(registry, signer, 99)).toThrow(ReleaseError);
  });
});

describe('buildReleaseManifest', () => {
  it('builds a manifest that validates, signs and verifies', () => {
    const signer = new TestSigner();
    const built = sampleManifest(7, 6);
    expect(manifestSchema.safeParse(built).success).toBe(true);
    expect(built.metrics).toEqual({ holdoutAccuracy: 0.97, latencyP50Ms: 0.02 });
    const v = verifyManifest(JSON.stringify(signer.sign(built)), signer.trusted);
    expect(v.ok).toBe(true);
    expect(built).toMatchObject({ release: 7, parent: 6, output: { kind: 'logits', classes: 10 }, lineage: { exampleCount: 7, round: 'r1' }, teacher: { id: 'teacher-1' } });
    expect(built.artifact.chunks).toHaveLength(Math.ceil(built.artifact.bytes / 1024));
  });
});

function sampleManifest(seq: number, parent: number | null = null, publicBaseUrl?: string) {
  const m = denseModel({ sizes: [784, 10], seed: seq });
  const input = new Float32Array(784).fill(0.5);
  return buildReleaseManifest({
    model: 'mnist',
    seq,
    parentSeq: parent,
    inputSpec: { ...MNIST_INPUT_SPEC, shape: [...MNIST_INPUT_SPEC.shape] },
    labels: DIGITS,
    teacherId: 'teacher-1',
    artifact: m.bytes,
    quantization: 'fp32',
    chunkSize: 1024,
    publicBaseUrl,
    metrics: { holdoutAccuracy: 0.97, latencyP50Ms: 0.02, hardAgreement: undefined, backend: 'wasm', nan: NaN },
    exampleCount: 7,
    roundId: 'r1',
    createdAt: new Date('2030-01-01T00:00:00.000Z'),
    validityDays: 30,
    selfTest: { input, expected: m.forward(input, 1), tolerance: 1e-4 },
  });
}

