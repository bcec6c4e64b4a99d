import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { Registry } from '../../../cloud/registry/db.js';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { q, type Tables, type TxDb } from '../../../cloud/registry/tx.js';
import { buildReleaseManifest } from '../../../cloud/rounds/manifest.js';
import { allocateReleaseSeq, currentRelease, insertRelease, reissueRelease, RELEASE_SEQ_HIGH, ReleaseError } from '../../../cloud/rounds/releases.js';
import { manifestSchema } from '../../../shared/protocol/schemas.js';
import { verifyManifest } from '../../../shared/manifest/index.js';
import { denseModel } from '../../fixtures/onnx-models.js';
import { registryDialects } from '../../helpers/dialects.js';
import { DIGITS, MNIST_INPUT_SPEC, TestSigner, insertModel, tempDir } from './helpers.js';

const dialects = registryDialects();

describe.each(dialects)('release sequence on $name', (d) => {
  let registry: StoreRegistry;
  beforeEach(async (ctx) => {
    registry = await d.open(ctx);
  });
  afterEach(() => d.close());

  it('is monotonic and never reused, across reopen and deleted rows', async () => {
    expect([await allocateReleaseSeq(registry), await allocateReleaseSeq(registry), await allocateReleaseSeq(registry)]).toEqual([1, 2, 3]);
    // Another connection (a reopened registry) continues from what is stored.
    registry = await d.openAnother();
    expect(await allocateReleaseSeq(registry)).toBe(4);
    // A release row above the recorded high (e.g. imported) moves the sequence past it.
    await insertModel(registry);
    const signer = new TestSigner();
    const m = signer.sign(sampleManifest(10));
    await insertRelease(registry, { model: 'mnist', seq: 10, sha256: m.manifest.artifact.sha256, bytes: 1, quantization: 'fp32', metrics: {}, manifest: m.manifest, signature: m.signature, artifactPath: 'x' });
    expect(await allocateReleaseSeq(registry)).toBe(11);
    await registry.q.delete(registry.t.releases);
    expect(await allocateReleaseSeq(registry)).toBe(12);
    const [high] = await registry.q.select().from(registry.t.meta).where(eq(registry.t.meta.key, RELEASE_SEQ_HIGH));
    expect(high!.value).toBe('12');
  });

  it('is safe between two connections to the same database (cloud and worker), also concurrently', async () => {
    const other = await d.openAnother();
    const seen: number[] = [];
    for (let i = 0; i < 20; i++) seen.push(await allocateReleaseSeq(i % 2 ? other : registry));
    expect(seen).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    // Concurrent allocations from both connections: each gets a distinct sequence (no lost update).
    const concurrent = await Promise.all(Array.from({ length: 20 }, (_, i) => allocateReleaseSeq(i % 2 ? other : registry)));
    expect([...concurrent].sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i + 21));
  });

  it('reissues an earlier release under a higher sequence with a fresh signature', async () => {
    await insertModel(registry);
    const signer = new TestSigner();
    const now = new Date('2030-01-01T00:00:00.000Z');
    for (const seq of [1, 2]) {
      const s = await allocateReleaseSeq(registry);
      const signed = signer.sign(sampleManifest(s, seq === 2 ? 1 : null, 'https://cloud.example'));
      await insertRelease(registry, { model: 'mnist', seq: s, sha256: signed.manifest.artifact.sha256, bytes: signed.manifest.artifact.bytes, quantization: 'fp32', metrics: { holdoutAccuracy: 0.9 + s / 100 }, manifest: signed.manifest, signature: signed.signature, parentSeq: s === 2 ? 1 : null, artifactPath: `artifacts/${s}.onnx` });
    }
    const seq = await reissueRelease(registry, signer, 1, { now });
    expect(seq).toBe(3);
    const row = (await currentRelease(registry, 'mnist'))!;
    expect(row).toMatchObject({ seq: 3, parentSeq: 2, artifactPath: 'artifacts/1.onnx', roundId: null, metrics: { holdoutAccuracy: 0.91, reissueOf: 1 } });
    const v = verifyManifest({ manifest: row.manifest, signature: row.signature }, signer.trusted);
    if (!v.ok) throw new Error(v.detail);
    expect(v.manifest).toMatchObject({ release: 3, parent: 2, lineage: { reissueOf: 1, exampleCount: 7 }, createdAt: now.toISOString(), expiresAt: '2030-01-31T00:00:00.000Z' });
    expect(v.manifest.artifact.url).toBe(`https://cloud.example/v1/artifacts/${v.manifest.artifact.sha256}`);
    expect(await reissueRelease(registry, signer, 3)).toBe(4);
    await expect(reissueRelease(registry, signer, 99)).rejects.toThrow(ReleaseError);
    // The refused re-issue allocated nothing: its transaction rolled back.
    expect(await allocateReleaseSeq(registry)).toBe(5);
  });
});

describe('SQLite transaction bodies', () => {
  it('take the write lock up front (BEGIN IMMEDIATE): the cloud and its round worker serialise instead of failing at the write', async () => {
    const tmp = tempDir();
    const cloud = Registry.open(join(tmp.dir, 'registry.db'), { busyTimeoutMs: 50 });
    const worker = Registry.open(join(tmp.dir, 'registry.db'));
    try {
      const readMeta = function* (tx: TxDb, t: Tables) {
        return yield* q(tx.select().from(t.meta).where(eq(t.meta.key, RELEASE_SEQ_HIGH)));
      };
      // The other process holds the write lock: even a body that starts with a read waits for it (and here times out).
      worker.sqlite.prepare('BEGIN IMMEDIATE').run();
      await expect(cloud.tx(readMeta)).rejects.toMatchObject({ code: expect.stringMatching(/^SQLITE_BUSY/) });
      worker.sqlite.prepare('COMMIT').run();
      expect(await cloud.tx(readMeta)).toEqual([]);
      expect(await allocateReleaseSeq(cloud)).toBe(1);
    } finally {
      cloud.dispose();
      worker.dispose();
      tmp.cleanup();
    }
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

