import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { models } from '../../../cloud/registry/schema.js';
import { distillSettingsSchema as roundsSettings, parseRoundModel } from '../../../cloud/rounds/settings.js';
import { call, harness, json, MNIST_LIKE, type Harness } from './helpers.js';

/**
 * The API validates `models` strictly; cloud/rounds/settings.ts is what reads them. These checks keep the
 * two in step: what the API stores parses for rounds, and every setting rounds knows is accepted here.
 */
describe('model settings: API ↔ cloud/rounds contract', () => {
  let h: Harness;
  beforeAll(() => {
    h = harness();
  });
  afterAll(() => h.close());

  const row = (name: string) => h.registry.db.select().from(models).where(eq(models.name, name)).get()!;

  it('a model stored through the API parses for a round, with the API defaults equal to the rounds defaults', async () => {
    const body = { ...MNIST_LIKE, distill: { baseData: 'mnist:train' }, schedule: { autoRollout: true } };
    expect((await call(h.app, 'PUT', '/v1/models/minimal', { body })).status).toBe(201);
    const parsed = parseRoundModel(row('minimal'));
    expect(parsed.settings).toEqual(roundsSettings.parse({ baseData: 'mnist:train' }));
    expect(row('minimal').distillSettings).toEqual(parsed.settings);
    expect(parsed.schedule).toMatchObject({ intervalSeconds: 3600, minNewExamples: 100, autoRollout: true, rollout: { target: { kind: 'all' } } });
  });

  it('accepts every setting the rounds parser fills in', async () => {
    const full = { ...roundsSettings.parse({ baseData: 'mnist:train', baseLimit: 100, tuneEpochs: 2, holdoutLimit: 50, selfTestTolerance: 0.1 }) };
    const res = await call(h.app, 'PUT', '/v1/models/full', { body: { ...MNIST_LIKE, distill: full } });
    expect(res.status, JSON.stringify(await json(res.clone()))).toBe(201);
    expect(parseRoundModel(row('full')).settings).toEqual(full);
  });
});
