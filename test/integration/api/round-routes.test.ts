/**
 * The admin API of models, rounds, releases and uploads on both registry dialects (issue 15): the real
 * createCloudApi over a SQLite file or a PostgreSQL database, real signing keys, real ONNX checks.
 * (The wider API suites in test/unit/cloud-api run on SQLite through their shared harness.)
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import type { Hono } from 'hono';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createCloudApi } from '../../../cloud/api/app.js';
import { RoundInProgressError, type RolloutsService, type RoundsService } from '../../../cloud/api/types.js';
import { KeyStore } from '../../../cloud/keys/store.js';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { recordShadowEval } from '../../../cloud/shadow/store.js';
import { verifyManifest } from '../../../shared/manifest/sign.js';
import { denseModel } from '../../fixtures/onnx-models.js';
import { registryDialects } from '../../helpers/dialects.js';
import { call, json, MNIST_LIKE, TOKEN } from '../../unit/cloud-api/helpers.js';

const dialects = registryDialects();

/** Records starts and refuses a second one per model, as cloud/rounds does (the runner itself is tested in test/integration/rounds). */
class RecordingRounds implements RoundsService {
  readonly started: string[] = [];
  constructor(private readonly reg: StoreRegistry) {}
  async start(model: string, trigger: 'manual'): Promise<{ id: string }> {
    if (this.started.includes(model)) throw new RoundInProgressError(model, `r-${model}`);
    this.started.push(model);
    const id = `r-${model}`;
    await this.reg.q.insert(this.reg.t.rounds).values({ id, model, state: 'queued', trigger });
    return { id };
  }
}

describe.each(dialects)('models, rounds, releases and uploads API on $name', (d) => {
  let reg: StoreRegistry;
  let dir: string;
  let keys: KeyStore;
  let app: Hono;
  let rounds: RecordingRounds;
  const published: number[] = [];

  beforeEach(async (ctx) => {
    reg = await d.open(ctx);
    dir = mkdtempSync(join(tmpdir(), 'apprentice-round-routes-'));
    keys = KeyStore.open({ dir: join(dir, 'keys') });
    mkdirSync(join(dir, 'artifacts'));
    rounds = new RecordingRounds(reg);
    published.length = 0;
    app = createCloudApi({
      registry: reg,
      keys,
      adminToken: TOKEN,
      broker: { publicUrl: 'mqtts://broker.example.com:8883' },
      rounds,
      rollouts: {} as RolloutsService,
      artifactsDir: join(dir, 'artifacts'),
      uploads: { publicBaseUrl: 'https://cloud.example.com', publish: async (seq) => (published.push(seq), []) },
      console: false,
    });
  });
  afterEach(async () => {
    await d.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('creates and updates a model, refuses a concurrent duplicate create, and shows its latest release', async () => {
    // Two creates at once: exactly one 201; the other sees it (200) or loses the insert race (409 model_exists).
    const both = await Promise.all([call(app, 'PUT', '/v1/models/digits', { body: MNIST_LIKE }), call(app, 'PUT', '/v1/models/digits', { body: MNIST_LIKE })]);
    const statuses = both.map((r) => r.status);
    expect(statuses.filter((s) => s === 201)).toHaveLength(1);
    expect([200, 409]).toContain(statuses.find((s) => s !== 201));
    if (statuses[0] === 409) expect((await json(both.find((r) => r.status === 409)!)).error).toMatchObject({ code: 'model_exists', field: 'name' });
    expect(await reg.q.select().from(reg.t.models)).toHaveLength(1);

    const updated = await call(app, 'PUT', '/v1/models/digits', { body: { ...MNIST_LIKE, studentSpec: 'linear' } });
    expect(updated.status).toBe(200);
    expect(await json(updated)).toMatchObject({ name: 'digits', studentSpec: 'linear', latestRelease: null });

    // An upload makes a signed release; the model then names it as its latest.
    const onnx = denseModel({ sizes: [4, 3], seed: 3 });
    const up = await app.request('/v1/models/digits/releases', { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/octet-stream' }, body: onnx.bytes });
    expect(up.status).toBe(201);
    const rel = await json(up);
    expect(rel).toMatchObject({ model: 'digits', seq: 1, sha256: onnx.sha256, problems: [] });
    expect(published).toEqual([1]);
    expect((await json(await call(app, 'GET', '/v1/models/digits'))).latestRelease).toBe(1);
    expect((await json(await call(app, 'GET', '/v1/models'))).models.map((m: { name: string; latestRelease: number | null }) => [m.name, m.latestRelease])).toEqual([['digits', 1]]);
    expect((await call(app, 'GET', '/v1/models/nope')).status).toBe(404);

    // The release reads back signed, and its artifact byte for byte.
    const detail = await json(await call(app, 'GET', '/v1/releases/1'));
    expect(verifyManifest({ manifest: detail.manifest, signature: detail.signature }, keys.trusted()).ok).toBe(true);
    expect((await json(await call(app, 'GET', '/v1/releases?model=digits'))).releases.map((r: { seq: number }) => r.seq)).toEqual([1]);
    const art = await call(app, 'GET', '/v1/releases/1/artifact');
    expect(Buffer.from(await art.arrayBuffer()).equals(Buffer.from(onnx.bytes))).toBe(true);
    expect((await call(app, 'GET', '/v1/releases/2')).status).toBe(404);

    // An upload for an unknown model: 404 naming it, nothing stored.
    const ghost = await app.request('/v1/models/ghost/releases', { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/octet-stream' }, body: onnx.bytes });
    expect(ghost.status).toBe(404);
    expect((await json(ghost)).error).toMatchObject({ code: 'unknown_model' });
    expect(await reg.q.select().from(reg.t.releases)).toHaveLength(1);
  });

  it('locks the input spec once examples exist', async () => {
    expect((await call(app, 'PUT', '/v1/models/digits', { body: MNIST_LIKE })).status).toBe(201);
    await reg.q.insert(reg.t.examples).values({ id: 'e1', deviceId: 'pi-1', model: 'digits', input: Buffer.alloc(16), studentOutput: [], reason: 'audit', capturedAt: new Date().toISOString() });
    const res = await call(app, 'PUT', '/v1/models/digits', { body: { ...MNIST_LIKE, inputSpec: { ...MNIST_LIKE.inputSpec, shape: [5] } } });
    expect(res.status).toBe(409);
    expect((await json(res)).error).toMatchObject({ code: 'input_spec_locked', field: 'inputSpec' });
  });

  it('starts a round, shows it and its shadow evaluation, and answers 404 for what does not exist', async () => {
    expect((await call(app, 'PUT', '/v1/models/digits', { body: MNIST_LIKE })).status).toBe(201);
    const res = await call(app, 'POST', '/v1/models/digits/rounds');
    expect(res.status).toBe(202);
    const { id } = await json(res);
    expect((await call(app, 'POST', '/v1/models/digits/rounds')).status).toBe(409);
    await reg.q.update(reg.t.rounds).set({ state: 'running', progress: { phase: 'train', epoch: 1, epochs: 2 } }).where(eq(reg.t.rounds.id, id));
    expect(await json(await call(app, 'GET', `/v1/rounds/${id}`))).toMatchObject({ id, model: 'digits', state: 'running', progress: { phase: 'train', epoch: 1 } });
    expect((await json(await call(app, 'GET', '/v1/models/digits/rounds?limit=5'))).rounds.map((r: { id: string }) => r.id)).toEqual([id]);
    const row = { scope: 'device' as const, deviceId: 'pi-1', cohort: null, samples: 60, judgedBy: 'device' as const, runningSeq: 1, candidateAccuracy: null, runningAccuracy: null, agreement: 0.5, delta: 0.25, deltaLow: 0, deltaHigh: 0.5 };
    await recordShadowEval(reg, id, 'digits', [row], null);
    expect(await json(await call(app, 'GET', `/v1/rounds/${id}/shadow`))).toMatchObject({ round: id, rows: [{ line: null, deviceId: 'pi-1', samples: 60, delta: 0.25 }] });
    for (const path of ['/v1/rounds/nope', '/v1/rounds/nope/shadow', '/v1/models/ghost/rounds']) expect((await call(app, 'GET', path)).status, path).toBe(404);
    expect((await call(app, 'POST', '/v1/models/ghost/rounds')).status).toBe(404);
  });
});
