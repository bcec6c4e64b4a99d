/**
 * Fleet test fixtures: a real registry file with the committed migrations, a model, releases with
 * real signed manifests and artifact files, devices, a recording MQTT publisher, and device-side
 * payload builders. Shared by test/unit/fleet and test/integration/fleet.
 */
import { createHash, randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq, max } from 'drizzle-orm';
import { Registry } from '../../../cloud/registry/db.js';
import { devices, models, releases, type ReleaseRow } from '../../../cloud/registry/schema.js';
import type { MqttPublisher, PublishOptions } from '../../../cloud/fleet/mqtt.js';
import { buildArtifactDescriptor, generateSigningKey, signManifest, toTrustedKey, type SigningKey, type TrustedKey } from '../../../shared/manifest/index.js';
import { EXAMPLE_REASONS, float32ToBase64, parseTopic, type DeviceEvent, type Manifest, type Status, type Telemetry } from '../../../shared/protocol/index.js';
type ExampleReason = (typeof EXAMPLE_REASONS)[number];

export const MODEL = 'tiny';
export const CHUNK_SIZE = 1024;

/** Deterministic bytes that differ per seed (so each release has its own sha256). */
export function artifactBytes(seed: number, size = 3 * CHUNK_SIZE + 123): Buffer {
  const out = Buffer.alloc(size);
  let h = createHash('sha256').update(`seed-${seed}`).digest();
  for (let off = 0; off < size; off += h.length) {
    h.copy(out, off, 0, Math.min(h.length, size - off));
    h = createHash('sha256').update(h).digest();
  }
  return out;
}

export class FleetFixture {
  readonly key: SigningKey = generateSigningKey();
  readonly trusted: TrustedKey[] = [toTrustedKey(this.key)];
  readonly dbPath: string;
  registry: Registry;

  constructor(readonly dir: string = mkdtempSync(join(tmpdir(), 'fleet-'))) {
    this.dbPath = join(dir, 'registry.db');
    this.registry = Registry.open(this.dbPath);
    mkdirSync(join(dir, 'artifacts'), { recursive: true });
    this.registry.db
      .insert(models)
      .values({ name: MODEL, inputSpec: { shape: [4], dtype: 'float32', scaling: { scale: 1, offset: 0 }, raw: 'float32' }, labels: ['a', 'b'], teacher: { files: [], outputKind: 'logits' }, studentSpec: 'mlp', distillSettings: {} })
      .onConflictDoNothing()
      .run();
  }

  get db() {
    return this.registry.db;
  }

  /** Closes and reopens the registry on the same file (a cloud restart). */
  reopen(): Registry {
    this.registry.dispose();
    this.registry = Registry.open(this.dbPath);
    return this.registry;
  }

  manifest(seq: number, bytes: Uint8Array, extra: Partial<Manifest> = {}): Manifest {
    const now = Date.now();
    return {
      v: 1,
      model: MODEL,
      release: seq,
      artifact: buildArtifactDescriptor(bytes, { quantization: 'fp32', chunkSize: CHUNK_SIZE }),
      input: { shape: [4], dtype: 'float32', scaling: { scale: 1, offset: 0 }, raw: 'float32' },
      output: { kind: 'probs', classes: 2 },
      labels: ['a', 'b'],
      teacher: { id: 'teacher-test' },
      metrics: { accuracy: 0.9 },
      lineage: { exampleCount: 0 },
      parent: null,
      createdAt: new Date(now).toISOString(),
      expiresAt: new Date(now + 365 * 86_400_000).toISOString(),
      selfTest: { input: [0, 0.5, 1, 0.25], expected: [0.4, 0.6], tolerance: 0.01 },
      ...extra,
    };
  }

  /** A release row with a signed manifest and its artifact file (relative path under `dir`). */
  addRelease(seq: number, { parent = null, bytes = artifactBytes(seq) }: { parent?: number | null; bytes?: Buffer } = {}): ReleaseRow {
    const m = this.manifest(seq, bytes, { parent });
    const signed = signManifest(m, this.key);
    const artifactPath = join('artifacts', `${m.artifact.sha256}.onnx`);
    writeFileSync(join(this.dir, artifactPath), bytes);
    return this.db
      .insert(releases)
      .values({ model: MODEL, seq, sha256: m.artifact.sha256, bytes: bytes.byteLength, quantization: 'fp32', metrics: m.metrics, manifest: signed.manifest, signature: signed.signature, parentSeq: parent, artifactPath })
      .returning()
      .get();
  }

  /** What cloud/rounds does on rollback: the previous release's model, re-signed under max(seq)+1. */
  readonly reissue = async (previousSeq: number): Promise<number> => {
    const prev = this.db.select().from(releases).where(eq(releases.seq, previousSeq)).get();
    if (!prev) throw new Error(`no release ${previousSeq}`);
    const seq = (this.db.select({ m: max(releases.seq) }).from(releases).get()?.m ?? 0) + 1;
    const pm = prev.manifest as Manifest;
    const signed = signManifest({ ...pm, release: seq, parent: previousSeq, lineage: { ...pm.lineage, reissueOf: previousSeq } }, this.key);
    this.db
      .insert(releases)
      .values({ model: MODEL, seq, sha256: prev.sha256, bytes: prev.bytes, quantization: prev.quantization, metrics: prev.metrics, manifest: signed.manifest, signature: signed.signature, parentSeq: previousSeq, artifactPath: prev.artifactPath })
      .run();
    this.reissued.push({ from: previousSeq, seq });
    return seq;
  };
  readonly reissued: { from: number; seq: number }[] = [];

  addDevice(id: string, { groups = ['lab'], online = true, runningSeq = null, desiredSeq = null, revoked = false }: { groups?: string[]; online?: boolean; runningSeq?: number | null; desiredSeq?: number | null; revoked?: boolean } = {}): void {
    this.db.insert(devices).values({ id, groups, credentialHash: 'x', online, runningSeq, desiredSeq, revoked }).run();
  }

  device(id: string) {
    return this.db.select().from(devices).where(eq(devices.id, id)).get();
  }

  dispose(): void {
    this.registry.dispose();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Records publishes; keeps a retained store like a broker (empty payload deletes). */
export class FakeMqtt implements MqttPublisher {
  readonly log: { topic: string; payload: Buffer; opts: PublishOptions }[] = [];
  readonly retained = new Map<string, Buffer>();
  fail: ((topic: string) => boolean) | undefined;

  async publish(topic: string, payload: Buffer | string, opts: PublishOptions): Promise<void> {
    if (this.fail?.(topic)) throw new Error(`fake publish failure on ${topic}`);
    const buf = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
    this.log.push({ topic, payload: buf, opts });
    if (opts.retain) {
      if (buf.byteLength === 0) this.retained.delete(topic);
      else this.retained.set(topic, buf);
    }
  }

  /** The release seq of the device's retained desired, or undefined. */
  desiredRelease(deviceId: string): number | undefined {
    const p = [...this.retained].find(([t]) => { const x = parseTopic(t); return x?.type === 'device' && x.kind === 'desired' && x.deviceId === deviceId; });
    return p ? (JSON.parse(p[1].toString()) as { manifest: Manifest }).manifest.release : undefined;
  }

  /** Every release seq ever published as this device's desired. */
  desiredHistory(deviceId: string): number[] {
    return this.log
      .filter((e) => { const x = parseTopic(e.topic); return x?.type === 'device' && x.kind === 'desired' && x.deviceId === deviceId && e.payload.byteLength > 0; })
      .map((e) => (JSON.parse(e.payload.toString()) as { manifest: Manifest }).manifest.release);
  }

  retainedChunks(sha: string): number {
    return [...this.retained.keys()].filter((t) => { const x = parseTopic(t); return x?.type === 'artifact' && x.sha256 === sha; }).length;
  }
}

// ---- device-side payloads ----

const iso = () => new Date().toISOString();

export function statusPayload(deviceId: string, release: number | null, sha256: string | null = null, state: Status['state'] = 'online'): Buffer {
  const s: Status = { v: 1, deviceId, state, model: release ? MODEL : null, release, sha256, at: iso() };
  return Buffer.from(JSON.stringify(s));
}

export function telemetryPayload(deviceId: string, release: number | null, health: Telemetry['health'] = 'ok'): Buffer {
  const t: Telemetry = {
    v: 1, deviceId, at: iso(), model: MODEL, release, uptimeSeconds: 10, requests: 5, errors: 0,
    latencyMs: { p50: 1, p95: 2 }, rssBytes: 1e8,
    outbox: { depth: 0, bytes: 0, dropped: 0, evicted: 0, selected: 0, published: 0 }, health,
  };
  return Buffer.from(JSON.stringify(t));
}

export function eventPayload(deviceId: string, type: DeviceEvent['type'], release: number | null, reason?: DeviceEvent['reason']): Buffer {
  const e: DeviceEvent = { v: 1, deviceId, at: iso(), type, model: release ? MODEL : null, release, sha256: null, ...(reason ? { reason } : {}) };
  return Buffer.from(JSON.stringify(e));
}

export interface BuiltBatch {
  payload: Buffer;
  ids: string[];
  inputs: Float32Array[];
}

export function examplesPayload(deviceId: string, n: number, { size = 4, batchId = randomUUID(), label, reason = label !== undefined ? 'feedback' : 'low_margin' }: { size?: number; batchId?: string; label?: number; reason?: ExampleReason } = {}): BuiltBatch {
  const ids: string[] = [];
  const inputs: Float32Array[] = [];
  const examples = Array.from({ length: n }, (_, i) => {
    const id = randomUUID();
    const input = Float32Array.from({ length: size }, (_, j) => (i * size + j) / 7);
    ids.push(id);
    inputs.push(input);
    return { id, input: float32ToBase64(input), output: [0.45, 0.55], model: MODEL, release: 1, at: iso(), reason, ...(label !== undefined ? { label } : {}) };
  });
  return { payload: Buffer.from(JSON.stringify({ v: 1, deviceId, batchId, examples })), ids, inputs };
}
