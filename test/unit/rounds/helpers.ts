import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateSigningKey, signManifest, toTrustedKey, type SigningKey, type TrustedKey } from '../../../shared/manifest/index.js';
import type { Manifest, SignedManifest } from '../../../shared/protocol/schemas.js';
import { Registry } from '../../../cloud/registry/db.js';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import type { ArtifactPublisher, RolloutRequest, RolloutStarter } from '../../../cloud/rounds/types.js';

export function tempDir(prefix = 'apprentice-rounds-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function openRegistry(dir: string): Registry {
  return Registry.open(join(dir, 'registry.db'));
}

/** A test signer backed by a fresh Ed25519 key (the KeyStore stands in for it in production). */
export class TestSigner {
  readonly key: SigningKey = generateSigningKey();
  readonly signed: Manifest[] = [];
  get trusted(): TrustedKey[] {
    return [toTrustedKey(this.key)];
  }
  sign(manifest: Manifest): SignedManifest {
    this.signed.push(manifest);
    return signManifest(manifest, { privateKeyPem: this.key.privateKeyPem });
  }
}

export class FakePublisher implements ArtifactPublisher {
  readonly calls: { sha256: string; bytes: number; chunkSize: number }[] = [];
  async publishArtifact(sha256: string, bytes: Uint8Array, chunkSize: number): Promise<void> {
    this.calls.push({ sha256, bytes: bytes.byteLength, chunkSize });
  }
}

export class FakeRollouts implements RolloutStarter {
  readonly calls: RolloutRequest[] = [];
  async create(input: RolloutRequest): Promise<unknown> {
    this.calls.push(input);
    return { id: `r${this.calls.length}` };
  }
}

export const MNIST_INPUT_SPEC = { shape: [784], dtype: 'float32', scaling: { scale: 1 / 255, offset: 0 }, raw: 'uint8' } as const;
export const DIGITS = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'];

export interface TestModelOptions {
  name?: string;
  teacherFile?: string;
  studentSpec?: string;
  distillSettings?: Record<string, unknown>;
  schedule?: Record<string, unknown> | null;
}

export async function insertModel(registry: StoreRegistry, o: TestModelOptions = {}): Promise<string> {
  const name = o.name ?? 'mnist';
  await registry.q
    .insert(registry.t.models)
    .values({
      name,
      inputSpec: MNIST_INPUT_SPEC,
      labels: DIGITS,
      teacher: { files: [o.teacherFile ?? '/nonexistent/teacher.onnx'], outputKind: 'logits' },
      studentSpec: o.studentSpec ?? 'mlp:16',
      distillSettings: o.distillSettings ?? { baseData: 'mnist:train', baseLimit: 1000 },
      schedule: o.schedule === undefined ? null : o.schedule,
    });
  return name;
}

/** Inserts ingested examples for `model` with the given inputs (float32 blobs) and optional labels. */
/** A row with a label is a `feedback` row (only those carry labels), unless `opts.reason` says otherwise. */
export async function insertExamples(
  registry: StoreRegistry,
  model: string,
  inputs: Float32Array[],
  labels: (number | null)[] = [],
  ingestedAt?: string,
  opts: { deviceId?: string; reason?: string; teacher?: { id: string; logits: (i: number) => Float32Array }; sources?: (Buffer | null)[] } = {},
): Promise<string[]> {
  const ids: string[] = [];
  for (const [i, x] of inputs.entries()) {
    const id = randomUUID();
    ids.push(id);
    await registry.q
      .insert(registry.t.examples)
      .values({
        id,
        deviceId: opts.deviceId ?? 'dev-1',
        model,
        releaseSeq: null,
        input: Buffer.from(x.buffer, x.byteOffset, x.byteLength),
        studentOutput: [],
        reason: opts.reason ?? (labels[i] != null ? 'feedback' : 'low_confidence'),
        label: labels[i] ?? null,
        ...(opts.teacher ? { teacherId: opts.teacher.id, teacherLogits: Buffer.from(opts.teacher.logits(i).buffer) } : {}),
        ...(opts.sources?.[i] ? { sourceImage: opts.sources[i], sourceFormat: 'png' as const } : {}),
        capturedAt: new Date().toISOString(),
        ...(ingestedAt ? { ingestedAt } : {}),
      });
  }
  return ids;
}

export function newId(): string {
  return randomUUID();
}
