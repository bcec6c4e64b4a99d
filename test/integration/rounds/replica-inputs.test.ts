/**
 * Issue 15 item 2 on PostgreSQL: a model registered through replica A's API (teacher ONNX file and IDX dataset
 * files on A's disk only) runs its rounds on replicas whose data dirs never saw those files. Registration imports
 * them into the registry's artifact store; round 1 on data dir B resolves the references to B's own cache and
 * stores its warm-start weights in the store; round 2 on data dir C warm-starts from them. Bad inputs: a path the
 * API replica cannot read, a directory, a malformed or unknown reference are 400s naming the field; a round whose
 * reference is gone, or whose plain path this replica lacks, fails naming the field; an imported file that is not
 * ONNX fails the round as a path did. Real teacher (onnxruntime), real tfjs training, in-process runRound.
 */
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import type { Hono } from 'hono';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createCloudApi } from '../../../cloud/api/app.js';
import type { RolloutsService, RoundsService } from '../../../cloud/api/types.js';
import { openArtifacts, type Artifacts } from '../../../cloud/artifacts/index.js';
import { KeyStore } from '../../../cloud/keys/store.js';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import type { ModelRow } from '../../../cloud/registry/schema.js';
import { openModelTeacher, resolveRoundInputs } from '../../../cloud/rounds/inputs.js';
import { parseRoundModel } from '../../../cloud/rounds/settings.js';
import { runRound } from '../../../cloud/rounds/round.js';
import { Teacher } from '../../../cloud/teacher/ort-teacher.js';
import type { RoundOutcome, RoundProgress } from '../../../cloud/rounds/types.js';
import { loadReleaseWeights, warmStartKey } from '../../../cloud/rounds/warm-weights.js';
import { buildModel } from '../../../cloud/models/build.js';
import { parseArch } from '../../../cloud/models/spec.js';
import { loadDataset } from '../../../shared/data/index.js';
import { writeIdx } from '../../../shared/data/idx.js';
import { silentLogger } from '../../../shared/log/index.js';
import { call, json, TOKEN } from '../../unit/cloud-api/helpers.js';
import { DIGITS, MNIST_INPUT_SPEC, TestSigner } from '../../unit/rounds/helpers.js';
import { registryDialects } from '../../helpers/dialects.js';
import { captureLogger } from '../../helpers/log.js';
import { openForSuite } from '../../helpers/dialects-suite.js';

const TEACHER_FIXTURE = join(import.meta.dirname, '../../bench/fixtures/teacher-cnn16x32x128.onnx');
const REF = /^artifact:([0-9a-f]{64})$/;
const pg = registryDialects().filter((d) => d.name === 'postgres');

describe.each(pg)('model inputs every replica reaches, on $name', (d) => {
  let root: string;
  /** Replica A's host: the only disk that ever has the teacher and the dataset files. */
  let hostA: string;
  let regA: StoreRegistry;
  let unavailable: string | undefined;
  let app: Hono;
  let body: Record<string, unknown>;
  let registered: { teacher: { files: string[]; sources?: Record<string, string> }; distill: { baseData: string; sources?: Record<string, string> } };
  const signer = new TestSigner();

  beforeAll(async () => {
    const opened = await openForSuite(d);
    if (typeof opened === 'string') return void (unavailable = opened);
    regA = opened;
    root = mkdtempSync(join(tmpdir(), 'apprentice-replica-inputs-'));
    hostA = join(root, 'host-a');
    mkdirSync(hostA);
    copyFileSync(TEACHER_FIXTURE, join(hostA, 'teacher.onnx'));
    const mnist = await loadDataset('mnist:train', { limit: 500, shuffleSeed: 5 });
    await writeIdx(join(hostA, 'images.idx'), [mnist.count, 28, 28], Uint8Array.from(mnist.features, (v) => Math.round(v * 255)));
    await writeIdx(join(hostA, 'labels.idx'), [mnist.count], Uint8Array.from(mnist.labels!));
    const a = openArtifacts({ registry: regA, dataDir: join(hostA, 'data'), log: silentLogger });
    expect(a.blobs.backend).toBe('registry');
    app = createCloudApi({
      registry: regA,
      keys: KeyStore.open({ dir: join(hostA, 'data', 'keys') }),
      adminToken: TOKEN,
      broker: { publicUrl: 'mqtts://broker.example.com:8883' },
      rounds: {} as RoundsService,
      rollouts: {} as RolloutsService,
      artifactsDir: join(hostA, 'data', 'artifacts'),
      artifacts: { store: a.served, blobs: a.blobs },
      console: false,
    });
    body = {
      inputSpec: MNIST_INPUT_SPEC,
      labels: DIGITS,
      teacher: { files: [join(hostA, 'teacher.onnx')], outputKind: 'logits' },
      studentSpec: 'mlp:16',
      distill: { baseData: `idx:${join(hostA, 'images.idx')},${join(hostA, 'labels.idx')}`, holdout: 'split:0.2', epochs: 1, batchSize: 64, lr: 3e-3, tolerance: 1, hardExampleShare: 0.1 },
    };
  }, 60_000);
  beforeEach((ctx) => {
    if (unavailable) ctx.skip(unavailable);
  });
  afterAll(async () => {
    await d.close();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  /** Another replica: its own registry connection and its own, empty data dir. */
  const replica = async (name: string): Promise<{ reg: StoreRegistry; dataDir: string; artifacts: Artifacts }> => {
    const reg = await d.openAnother();
    const dataDir = join(root, name);
    return { reg, dataDir, artifacts: openArtifacts({ registry: reg, dataDir, log: silentLogger }) };
  };
  const modelRow = async (name: string): Promise<ModelRow> => (await regA.q.select().from(regA.t.models).where(eq(regA.t.models.name, name)))[0]!;
  const round = async (r: Awaited<ReturnType<typeof replica>>, model: ModelRow, details: string[] = []): Promise<RoundOutcome> => {
    const id = `r-${randomBytes(4).toString('hex')}`;
    await r.reg.q.insert(r.reg.t.rounds).values({ id, model: model.name, state: 'running', trigger: 'manual' });
    return runRound({ roundId: id, registry: { url: 'unused-in-process' }, dataDir: r.dataDir, model }, {
      registry: r.reg,
      blobs: r.artifacts.blobs,
      signer,
      log: silentLogger,
      onProgress: (p: Omit<RoundProgress, 'at'>) => void (p.detail && details.push(p.detail)),
    });
  };

  it('registration on replica A stores the teacher and dataset files and keeps artifact: references with their paths', async () => {
    const res = await call(app, 'PUT', '/v1/models/mnist', { body });
    expect(res.status, await res.clone().text()).toBe(201);
    registered = (await json(res)) as typeof registered;
    const [teacherRef] = registered.teacher.files;
    const teacherSha = REF.exec(teacherRef!)![1]!;
    expect(registered.teacher.sources).toEqual({ [teacherSha]: join(hostA, 'teacher.onnx') });
    const [images, labels] = registered.distill.baseData.replace(/^idx:/, '').split(',');
    expect(images).toMatch(REF);
    expect(labels).toMatch(REF);
    expect(Object.values(registered.distill.sources!).sort()).toEqual([join(hostA, 'images.idx'), join(hostA, 'labels.idx')]);
    // The stored row is what a round reads; a PUT of the GET body keeps the references and their names.
    expect((await modelRow('mnist')).teacher).toMatchObject({ files: [teacherRef] });
    const again = await call(app, 'PUT', '/v1/models/mnist', { body: { ...body, teacher: registered.teacher, distill: { ...(body.distill as object), baseData: registered.distill.baseData, sources: registered.distill.sources } } });
    expect(again.status).toBe(200);
    expect(await json(again)).toMatchObject({ teacher: registered.teacher, distill: { baseData: registered.distill.baseData, sources: registered.distill.sources } });
  });

  it('refuses inputs no replica can use with a 400 naming the field', async () => {
    const put = async (patch: { teacher?: string[]; baseData?: string }) => {
      const b = { ...body, teacher: { files: patch.teacher ?? registered.teacher.files }, distill: { ...(body.distill as object), baseData: patch.baseData ?? registered.distill.baseData } };
      const res = await call(app, 'PUT', '/v1/models/bad', { body: b });
      return { status: res.status, error: ((await json(res)) as { error: { code: string; field: string; message: string } }).error };
    };
    const missing = await put({ teacher: [join(root, 'nowhere', 'teacher.onnx')] });
    expect(missing).toMatchObject({ status: 400, error: { code: 'invalid_model_input', field: 'teacher.files[0]' } });
    expect(missing.error.message).toMatch(/cannot be read on this replica \(ENOENT\)/);
    expect(await put({ baseData: `csv:${root}` })).toMatchObject({ status: 400, error: { field: 'distill.baseData', message: expect.stringMatching(/is not a file/) } });
    expect(await put({ baseData: `images:${hostA}` })).toMatchObject({ status: 400, error: { field: 'distill.baseData', message: expect.stringMatching(/directory/) } });
    const unknown = `artifact:${randomBytes(32).toString('hex')}`;
    expect(await put({ teacher: [registered.teacher.files[0]!, unknown] })).toMatchObject({ status: 400, error: { field: 'teacher.files[1]', message: expect.stringMatching(/is not in the artifact store/) } });
    expect(await put({ baseData: 'unlabeled:csv:artifact:XYZ' })).toMatchObject({ status: 400, error: { field: 'distill.baseData', message: expect.stringMatching(/64 lowercase hex/) } });
    expect(await modelRow('bad')).toBeUndefined();
  });

  it('a round on data dir B, which never saw the files, releases; round 2 on data dir C warm-starts from it', async () => {
    // Replica A's host is gone: its files and its data dir.
    rmSync(hostA, { recursive: true, force: true });
    const b = await replica('replica-b');
    const details1: string[] = [];
    const first = await round(b, await modelRow('mnist'), details1);
    expect(first).toMatchObject({ state: 'released', releaseSeq: 1 });
    expect(details1.some((x) => x.includes('from scratch: no current release'))).toBe(true);
    // B read the teacher and the data from its cache; its weights went to the store, not to B's disk.
    expect(readdirSync(join(b.dataDir, 'cache', 'artifacts')).sort()).toEqual([registered.teacher.files[0]!, ...registered.distill.baseData.replace(/^idx:/, '').split(',')].map((r) => REF.exec(r)![1]!).sort());
    expect(existsSync(join(b.dataDir, 'artifacts'))).toBe(false);
    if (first.state !== 'released') throw new Error('unreachable');
    const [weights] = await b.reg.q.select().from(b.reg.t.meta).where(eq(b.reg.t.meta.key, warmStartKey(first.sha256)));
    expect(weights?.value).toMatch(/^[0-9a-f]{64}$/);

    const c = await replica('replica-c');
    const details2: string[] = [];
    const second = await round(c, await modelRow('mnist'), details2);
    expect(second).toMatchObject({ state: 'released', releaseSeq: 2 });
    expect(details2.some((x) => x.includes('warm start from #1'))).toBe(true);
    expect(details2.some((x) => x.includes('from scratch'))).toBe(false);
  }, 240_000);

  it("the shadow teacher gate's teacher (openModelTeacher) opens the referenced teacher on another replica", async () => {
    const c = await replica('replica-d');
    const opened = await openModelTeacher(c.reg, c.artifacts.blobs, 'mnist', silentLogger);
    const original = await Teacher.create([TEACHER_FIXTURE]);
    try {
      expect(opened).toMatchObject({ inputSize: 784, classes: 10 });
      expect(opened.teacher.id).toBe(original.id);
      const x = new Float32Array(784).map((_, i) => (i % 13) / 13);
      expect([...(await opened.teacher.logits(x, 784)).logits]).toEqual([...(await original.logits(x, 784)).logits]);
    } finally {
      await opened.teacher.dispose();
      await original.dispose();
    }
  });

  it('a plain path left in a row is read where this replica has it, with a warning; the file store passes paths through silently', async () => {
    const b = await replica('replica-b');
    const row = await modelRow('mnist');
    const legacy = parseRoundModel({ ...row, teacher: { files: [TEACHER_FIXTURE], outputKind: 'logits' }, distillSettings: { ...(row.distillSettings as object), baseData: 'mnist:train' } });
    const cap = captureLogger();
    const got = await resolveRoundInputs(legacy, b.artifacts.blobs, cap.log);
    expect(got).toEqual({ teacherFiles: [TEACHER_FIXTURE], teacherNames: [TEACHER_FIXTURE], baseData: 'mnist:train', holdout: 'split:0.2' });
    expect(cap.lines()).toEqual([expect.objectContaining({ level: 40, field: 'teacher.files[0]', path: TEACHER_FIXTURE, model: 'mnist' })]);
    const quiet = captureLogger();
    const files = openArtifacts({ registry: b.reg, dataDir: b.dataDir, log: silentLogger, backend: 'file' });
    const missing = parseRoundModel({ ...row, teacher: { files: ['/nowhere/teacher.onnx'], outputKind: 'logits' }, distillSettings: { ...(row.distillSettings as object), baseData: 'csv:/nowhere/base.csv' } });
    expect(await resolveRoundInputs(missing, files.blobs, quiet.log)).toMatchObject({ teacherFiles: ['/nowhere/teacher.onnx'], baseData: 'csv:/nowhere/base.csv' });
    expect(quiet.lines()).toEqual([]);
  });

  it('missing warm-start weights train from scratch with the reason; they never fail the round', async () => {
    const b = await replica('replica-b');
    const arch = parseArch('mlp:16', 'studentSpec');
    const student = buildModel(arch, { inputSize: 784, classes: 10, seed: 1 });
    try {
      const place = { dataDir: b.dataDir, registry: b.reg, blobs: b.artifacts.blobs };
      const release = randomBytes(32).toString('hex');
      expect(await loadReleaseWeights(place, release, student, arch.text)).toEqual({ loaded: false, reason: `parent weights unavailable (none stored for release ${release.slice(0, 12)})` });
      const gone = randomBytes(32).toString('hex');
      await b.reg.q.insert(b.reg.t.meta).values({ key: warmStartKey(release), value: gone });
      expect(await loadReleaseWeights(place, release, student, arch.text)).toMatchObject({ loaded: false, reason: expect.stringContaining(`artifact ${gone} is not stored`) });
      const junk = await b.artifacts.blobs.put('model', Uint8Array.from([255, 255, 255, 255, 1, 2]));
      await b.reg.q.update(b.reg.t.meta).set({ value: junk.sha256 }).where(eq(b.reg.t.meta.key, warmStartKey(release)));
      expect(await loadReleaseWeights(place, release, student, arch.text)).toMatchObject({ loaded: false, reason: expect.stringContaining('malformed') });
    } finally {
      student.dispose();
    }
  });

  it('a round fails naming the field for a reference the store lacks or a path this replica lacks; a non-ONNX teacher fails as before', async () => {
    const b = await replica('replica-b');
    const row = await modelRow('mnist');
    const unknown = randomBytes(32).toString('hex');
    await expect(round(b, { ...row, teacher: { files: [`artifact:${unknown}`], outputKind: 'logits' } })).rejects.toThrow(new RegExp(`model mnist: teacher\\.files\\[0\\]: artifact:${unknown} cannot be read from the artifact store`));
    await expect(round(b, { ...row, distillSettings: { ...(row.distillSettings as object), holdout: `csv:${join(root, 'gone.csv')}` } })).rejects.toThrow(/model mnist: distill\.holdout: .*gone\.csv is not on this replica's disk/);

    // Not ONNX: registration stores it (content is not checked), the round refuses it naming the file it came from.
    const junkPath = join(root, 'junk.onnx');
    writeFileSync(junkPath, 'not an onnx model');
    const res = await call(app, 'PUT', '/v1/models/junk', { body: { ...body, teacher: { files: [junkPath] }, distill: { ...(body.distill as object), baseData: registered.distill.baseData } } });
    expect(res.status, await res.clone().text()).toBe(201);
    const junkRef = ((await json(res)) as typeof registered).teacher.files[0]!;
    await expect(round(b, await modelRow('junk'))).rejects.toThrow(new RegExp(`^${junkRef} \\(from ${junkPath.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\): not a loadable ONNX model`));
  }, 60_000);
});
