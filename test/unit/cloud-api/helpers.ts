import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { and, eq, inArray } from 'drizzle-orm';
import type { Hono } from 'hono';
import { createCloudApi } from '../../../cloud/api/app.js';
import { RolloutConflictError, RoundInProgressError, type CloudApiDeps, type CreateRolloutInput, type RolloutsService, type RoundsService } from '../../../cloud/api/types.js';
import { KeyStore } from '../../../cloud/keys/store.js';
import { Registry } from '../../../cloud/registry/db.js';
import { devices, examples, models, releases, rolloutDevices, rollouts, rounds, type RolloutRow } from '../../../cloud/registry/schema.js';
import { sha256Of } from '../../../shared/manifest/artifact.js';

export const TOKEN = 'test-admin-token-0123456789abcdef';
export const BROKER_URL = 'mqtts://broker.example.com:8883';

/** cloud/rounds stand-in: one queued round per model at a time, written to the real registry. */
export class FakeRounds implements RoundsService {
  readonly calls: { model: string; trigger: string }[] = [];
  constructor(private readonly registry: Registry) {}
  start(model: string, trigger: 'manual'): { id: string } {
    this.calls.push({ model, trigger });
    const db = this.registry.db;
    const busy = db.select({ id: rounds.id }).from(rounds).where(and(eq(rounds.model, model), inArray(rounds.state, ['queued', 'running']))).get();
    if (busy) throw new RoundInProgressError(model, busy.id);
    const id = `r-${randomUUID().slice(0, 8)}`;
    db.insert(rounds).values({ id, model, state: 'queued', trigger }).run();
    return { id };
  }
}

/** cloud/rollouts RolloutEngine stand-in over the real registry tables. */
export class FakeRollouts implements RolloutsService {
  readonly aborted: { id: string; reason: string }[] = [];
  readonly rolledBack: string[] = [];
  constructor(private readonly registry: Registry) {}
  async create(input: CreateRolloutInput): Promise<RolloutRow> {
    const db = this.registry.db;
    const active = db.select().from(rollouts).where(and(eq(rollouts.model, input.model), inArray(rollouts.state, ['pending', 'canary', 'fleet']))).get();
    if (active) throw new RolloutConflictError(`model ${input.model} already has rollout ${active.id} in progress`);
    const id = `ro-${randomUUID().slice(0, 8)}`;
    const row = db
      .insert(rollouts)
      .values({ id, model: input.model, releaseSeq: input.releaseSeq, target: input.target, canaryShare: input.canaryShare ?? input.waves?.[0] ?? 0.1, waves: input.waves ?? null, soakSeconds: input.soakSeconds, failureThreshold: input.failureThreshold, agreementMargin: input.agreementMargin, state: 'canary' })
      .returning()
      .get();
    const ids = input.target.kind === 'devices' ? input.target.ids : db.select({ id: devices.id }).from(devices).where(eq(devices.revoked, false)).all().map((d) => d.id);
    ids.forEach((deviceId, i) => db.insert(rolloutDevices).values({ rolloutId: id, deviceId, canary: i === 0, state: i === 0 ? 'desired' : 'waiting' }).run());
    return row;
  }
  async abort(id: string, reason: string): Promise<void> {
    const row = this.get(id)!;
    if (!['pending', 'canary', 'fleet'].includes(row.state)) throw new RolloutConflictError(`rollout ${id} is ${row.state}`);
    this.aborted.push({ id, reason });
    this.registry.db.update(rollouts).set({ state: 'aborted', reason }).where(eq(rollouts.id, id)).run();
  }
  async pause(id: string, reason: string): Promise<void> {
    const row = this.get(id)!;
    if (row.pausedAt || !['pending', 'canary', 'fleet'].includes(row.state)) throw new RolloutConflictError(`rollout ${id} is ${row.state}${row.pausedAt ? ' and paused' : ''}`);
    this.registry.db.update(rollouts).set({ pausedAt: new Date().toISOString(), pauseReason: reason }).where(eq(rollouts.id, id)).run();
  }
  async resume(id: string): Promise<void> {
    if (!this.get(id)!.pausedAt) throw new RolloutConflictError(`rollout ${id} is not paused`);
    this.registry.db.update(rollouts).set({ pausedAt: null, pauseReason: null }).where(eq(rollouts.id, id)).run();
  }
  async rollback(id: string): Promise<void> {
    this.rolledBack.push(id);
    this.registry.db.update(rollouts).set({ state: 'rolled_back', rollbackSeq: 1 }).where(eq(rollouts.id, id)).run();
  }
  get(id: string): RolloutRow | undefined {
    return this.registry.db.select().from(rollouts).where(eq(rollouts.id, id)).get();
  }
  list(): RolloutRow[] {
    return this.registry.db.select().from(rollouts).all().reverse();
  }
}

export interface Harness {
  app: Hono;
  dir: string;
  registry: Registry;
  keys: KeyStore;
  rounds: FakeRounds;
  rollouts: FakeRollouts;
  fleetCalls: string[];
  artifactsDir: string;
  close(): void;
}

export function harness(over: Partial<CloudApiDeps> = {}): Harness {
  const dir = mkdtempSync(join(tmpdir(), 'apprentice-cloud-api-'));
  const registry = Registry.open(join(dir, 'registry.db'));
  const keys = KeyStore.open({ dir: join(dir, 'keys') });
  const artifactsDir = join(dir, 'artifacts');
  mkdirSync(artifactsDir);
  const rounds = new FakeRounds(registry);
  const rolloutsSvc = new FakeRollouts(registry);
  const fleetCalls: string[] = [];
  const app = createCloudApi({
    registry,
    keys,
    adminToken: TOKEN,
    broker: { publicUrl: BROKER_URL },
    rounds,
    rollouts: rolloutsSvc,
    fleet: {
      onDeviceProvisioned: async (id, groups) => void fleetCalls.push(`provisioned ${id} ${groups.join(',')}`),
      onDeviceRevoked: async (id) => void fleetCalls.push(`revoked ${id}`),
    },
    artifactsDir,
    ...over,
  });
  return {
    app, dir, registry, keys, rounds, rollouts: rolloutsSvc, fleetCalls, artifactsDir,
    close() {
      registry.dispose();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A request with the admin token (unless `headers.authorization` overrides it). */
export async function call(app: Hono, method: string, path: string, { body, headers = {} }: { body?: unknown; headers?: Record<string, string> } = {}): Promise<Response> {
  const h: Record<string, string> = { authorization: `Bearer ${TOKEN}`, ...headers };
  if (body !== undefined && !('content-type' in h)) h['content-type'] = 'application/json';
  return app.request(path, { method, headers: h, body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body) });
}

export async function json<T = any>(res: Response): Promise<T> {
  return (await res.json()) as T;
}

export const MNIST_LIKE = {
  inputSpec: { shape: [4], dtype: 'float32', scaling: { scale: 1, offset: 0 } },
  labels: ['a', 'b', 'c'],
  teacher: { files: ['teacher.onnx'], outputKind: 'logits' },
  studentSpec: 'mlp:8',
  distill: { temperature: 4, alpha: 0.9, epochs: 2, batchSize: 32, lr: 0.01, baseData: 'csv:base.csv', holdout: 'csv:holdout.csv', tolerance: 0.01 },
};

/** A model row straight into the registry (bypassing the API). */
export function seedModel(h: Harness, name = 'digits'): void {
  h.registry.db
    .insert(models)
    .values({ name, inputSpec: { ...MNIST_LIKE.inputSpec, raw: 'float32' }, labels: MNIST_LIKE.labels, teacher: MNIST_LIKE.teacher, studentSpec: 'mlp:8', distillSettings: MNIST_LIKE.distill })
    .run();
}

/** A release with a real artifact file of `bytes` under artifactsDir. */
export function seedRelease(h: Harness, { model = 'digits', seq = 1, bytes }: { model?: string; seq?: number; bytes: Buffer }): { sha256: string } {
  const sha256 = sha256Of(bytes);
  writeFileSync(join(h.artifactsDir, `${sha256}.onnx`), bytes);
  h.registry.db
    .insert(releases)
    .values({ model, seq, sha256, bytes: bytes.length, quantization: 'int8', metrics: { accuracy: 0.9 }, manifest: { v: 1, model, release: seq }, signature: { alg: 'ed25519', keyId: h.keys.active().keyId, sig: 'AA==' }, artifactPath: `${sha256}.onnx` })
    .run();
  return { sha256 };
}

export function seedDevice(h: Harness, id: string, over: Partial<typeof devices.$inferInsert> = {}): void {
  h.registry.db.insert(devices).values({ id, groups: [], credentialHash: '$7$101$AAAA$AAAA', ...over }).run();
}

export function seedExample(h: Harness, { id = randomUUID(), deviceId = 'pi-1', model = 'digits', releaseSeq = 1, input, label = null, reason = 'low_confidence', ingestedAt }: { id?: string; deviceId?: string; model?: string; releaseSeq?: number | null; input: number[]; label?: number | null; reason?: string; ingestedAt?: string }): void {
  h.registry.db
    .insert(examples)
    .values({ id, deviceId, model, releaseSeq, input: Buffer.from(new Float32Array(input).buffer), studentOutput: [0.5, 0.3, 0.2], reason, label, capturedAt: new Date().toISOString(), ...(ingestedAt ? { ingestedAt } : {}) })
    .run();
}
