import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rounds } from '../../../cloud/registry/schema.js';
import { call, harness, json, MNIST_LIKE, seedExample, seedModel, type Harness } from './helpers.js';

describe('/v1/models and rounds', () => {
  let h: Harness;
  beforeEach(() => {
    h = harness();
  });
  afterEach(() => h.close());

  it('creates (201) then updates (200) a model, filling defaults, and lists it', async () => {
    const created = await call(h.app, 'PUT', '/v1/models/digits', { body: MNIST_LIKE });
    expect(created.status).toBe(201);
    const m = await json(created);
    expect(m).toMatchObject({ name: 'digits', labels: ['a', 'b', 'c'], studentSpec: 'mlp:8', schedule: null, latestRelease: null });
    expect(m.inputSpec.raw).toBe('float32');
    expect(m.distill).toMatchObject({ temperature: 4, seed: 1, warmStart: true, artifact: 'int8', holdoutSeed: 1234 });

    const schedule = { intervalSeconds: 3600, minNewExamples: 100, autoRollout: true, rollout: { canaryShare: 0.2, soakSeconds: 60, failureThreshold: 0.1, target: { group: 'lab' } } };
    const updated = await call(h.app, 'PUT', '/v1/models/digits', { body: { ...MNIST_LIKE, studentSpec: 'linear', schedule } });
    expect(updated.status).toBe(200);
    const u = await json(updated);
    expect(u.studentSpec).toBe('linear');
    expect(u.schedule.rollout.target).toEqual({ kind: 'group', group: 'lab' });
    expect(u.createdAt).toBe(m.createdAt);

    const list = await json(await call(h.app, 'GET', '/v1/models'));
    expect(list.models.map((x: { name: string }) => x.name)).toEqual(['digits']);
    expect((await json(await call(h.app, 'GET', '/v1/models/digits'))).studentSpec).toBe('linear');
    // The one grammar of cloud/models/spec.ts: conv students are accepted too (issue 11).
    expect((await call(h.app, 'PUT', '/v1/models/digits', { body: { ...MNIST_LIKE, studentSpec: 'dscnn:8,16/32', schedule } })).status).toBe(200);
    expect((await call(h.app, 'GET', '/v1/models/nope')).status).toBe(404);
  });

  it('names the offending field of a bad model', async () => {
    const cases: [unknown, string][] = [
      [{ ...MNIST_LIKE, studentSpec: 'resnet:18' }, 'studentSpec'],
      [{ ...MNIST_LIKE, studentSpec: 'cnn:8/16,32' }, 'studentSpec'],
      [{ ...MNIST_LIKE, studentSpec: 'mlp:0' }, 'studentSpec'],
      // A conv student on an input that is not an image (10 values: not a square, no image form).
      [{ ...MNIST_LIKE, studentSpec: 'cnn:8', inputSpec: { ...MNIST_LIKE.inputSpec, shape: [10] } }, 'studentSpec'],
      [{ ...MNIST_LIKE, labels: ['only-one'] }, 'labels'],
      [{ ...MNIST_LIKE, labels: ['a', 'a'] }, 'labels'],
      [{ ...MNIST_LIKE, distill: { ...MNIST_LIKE.distill, alpha: 2 } }, 'distill.alpha'],
      [{ ...MNIST_LIKE, distill: { ...MNIST_LIKE.distill, epochs: '3' } }, 'distill.epochs'],
      [{ ...MNIST_LIKE, distill: { ...MNIST_LIKE.distill, baseData: 'http://x' } }, 'distill.baseData'],
      [{ ...MNIST_LIKE, distill: { ...MNIST_LIKE.distill, bogus: 1 } }, 'distill.bogus'],
      [{ ...MNIST_LIKE, inputSpec: { ...MNIST_LIKE.inputSpec, dtype: 'int8' } }, 'inputSpec.dtype'],
      [{ ...MNIST_LIKE, teacher: undefined }, 'teacher'],
      [{ ...MNIST_LIKE, schedule: { intervalSeconds: 0 } }, 'schedule.intervalSeconds'],
      [{ ...MNIST_LIKE, distill: { ...MNIST_LIKE.distill, quantization: 'int8' } }, 'distill.quantization'],
      [{ ...MNIST_LIKE, distill: { ...MNIST_LIKE.distill, holdout: 'split' } }, 'distill.holdout'],
      [{ ...MNIST_LIKE, schedule: { intervalSeconds: 600, rollout: { target: 'some' } } }, 'schedule.rollout.target'],
      // Cohort lines augmented with the teacher (issue 13): bounds, and an augmentation that does nothing.
      [{ ...MNIST_LIKE, distill: { ...MNIST_LIKE.distill, cohortAugment: { rotate: 200 } } }, 'distill.cohortAugment.rotate'],
      [{ ...MNIST_LIKE, distill: { ...MNIST_LIKE.distill, cohorts: [{ name: 'r', group: 'g', augment: {} }] } }, 'distill.cohorts.0.augment'],
    ];
    for (const [body, field] of cases) {
      const res = await call(h.app, 'PUT', '/v1/models/digits', { body });
      expect(res.status, field).toBe(400);
      expect((await json(res)).error, field).toMatchObject({ code: 'invalid_body', field });
    }
    const missing = await json(await call(h.app, 'PUT', '/v1/models/digits', { body: { ...MNIST_LIKE, teacher: undefined } }));
    expect(missing.error.message).toBe('teacher: required');
    const badName = await call(h.app, 'PUT', '/v1/models/-bad', { body: MNIST_LIKE });
    expect((await json(badName)).error).toMatchObject({ code: 'invalid_param', field: 'name' });
  });

  it('refuses to change the input spec of a model with examples', async () => {
    seedModel(h);
    seedExample(h, { input: [1, 2, 3, 4] });
    const res = await call(h.app, 'PUT', '/v1/models/digits', { body: { ...MNIST_LIKE, inputSpec: { ...MNIST_LIKE.inputSpec, shape: [5] } } });
    expect(res.status).toBe(409);
    expect((await json(res)).error).toMatchObject({ code: 'input_spec_locked', field: 'inputSpec' });
    expect((await call(h.app, 'PUT', '/v1/models/digits', { body: { ...MNIST_LIKE, labels: ['x', 'y', 'z'] } })).status).toBe(200);
  });

  it('starts a round (202), answers 409 while one runs, and shows it', async () => {
    seedModel(h);
    const res = await call(h.app, 'POST', '/v1/models/digits/rounds');
    expect(res.status).toBe(202);
    const { id } = await json(res);
    expect(res.headers.get('location')).toBe(`/v1/rounds/${id}`);
    expect(h.rounds.calls).toEqual([{ model: 'digits', trigger: 'manual' }]);

    const busy = await call(h.app, 'POST', '/v1/models/digits/rounds', { body: {} });
    expect(busy.status).toBe(409);
    expect((await json(busy)).error).toMatchObject({ code: 'round_in_progress' });

    h.registry.db.update(rounds).set({ state: 'running', progress: { phase: 'train', epoch: 1, epochs: 2 }, startedAt: '2024-01-01T00:00:00.000Z' }).where(eq(rounds.id, id)).run();
    const r = await json(await call(h.app, 'GET', `/v1/rounds/${id}`));
    expect(r).toMatchObject({ id, model: 'digits', state: 'running', trigger: 'manual', progress: { phase: 'train', epoch: 1 }, metrics: null, error: null });
    const list = await json(await call(h.app, 'GET', '/v1/models/digits/rounds?limit=5'));
    expect(list.rounds.map((x: { id: string }) => x.id)).toEqual([id]);

    expect((await call(h.app, 'GET', '/v1/rounds/nope')).status).toBe(404);
    expect((await call(h.app, 'POST', '/v1/models/ghost/rounds')).status).toBe(404);
    expect((await call(h.app, 'GET', '/v1/models/ghost/rounds')).status).toBe(404);
    const badLimit = await call(h.app, 'GET', '/v1/models/digits/rounds?limit=0');
    expect((await json(badLimit)).error).toMatchObject({ code: 'invalid_query', field: 'limit' });
    const unknownBody = await call(h.app, 'POST', '/v1/models/digits/rounds', { body: { force: true } });
    expect((await json(unknownBody)).error).toMatchObject({ code: 'invalid_body', field: 'force' });
  });
});
