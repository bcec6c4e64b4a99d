/**
 * Issue 10: the operator's view of quarantined feedback labels (API and `apprentice examples
 * quarantine`), and the per-device ingest counts in /v1/examples/stats.
 */
import { Command } from 'commander';
import { inArray } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { examples } from '../../../cloud/registry/schema.js';
import { examplesCommand } from '../../../cloud/rounds/quarantine-cli.js';
import { call, harness, json, seedExample, seedModel, TOKEN, type Harness } from './helpers.js';
import { captureProgram } from '../../helpers/capture-program.js';

const ID = (i: number) => `00000000-0000-4000-8000-00000000010${i}`;

describe('/v1/examples/quarantine', () => {
  let h: Harness;
  beforeAll(() => {
    h = harness({ ingestCounts: () => ({ flood: { deferred: 40, refused: 2, labelsIgnored: 0 } }) });
    seedModel(h);
    for (let i = 0; i < 4; i++) seedExample(h, { id: ID(i), input: [1, 2, 3, 4], label: 1, reason: 'feedback', ingestedAt: `2030-01-0${i + 1}T00:00:00.000Z` });
    h.registry.db.update(examples).set({ labelState: 'quarantined', teacherLogits: Buffer.from(Float32Array.of(10, 0, 0).buffer) }).where(inArray(examples.id, [ID(0), ID(1), ID(2)])).run();
  });
  afterAll(() => h.close());

  it('lists, accepts and drops; stats count the quarantine and the per-device ingest figures', async () => {
    const list = await json(await call(h.app, 'GET', '/v1/examples/quarantine?model=digits'));
    expect(list.examples.map((e: { id: string }) => e.id)).toEqual([ID(2), ID(1), ID(0)]);
    expect(list.examples[0]).toMatchObject({ deviceId: 'pi-1', label: 1, teacherClass: 0 });
    expect(list.examples[0].labelProb).toBeLessThan(0.05);
    const stats = await json(await call(h.app, 'GET', '/v1/examples/stats'));
    expect(stats).toMatchObject({ quarantined: 3, ingestByDevice: { flood: { deferred: 40, refused: 2, labelsIgnored: 0 } } });

    expect((await call(h.app, 'POST', `/v1/examples/quarantine/${ID(0)}/accept`)).status).toBe(200);
    expect((await call(h.app, 'POST', `/v1/examples/quarantine/${ID(1)}/drop`)).status).toBe(200);
    // Not in quarantine (any more, or never): 404 with a JSON body.
    const again = await call(h.app, 'POST', `/v1/examples/quarantine/${ID(1)}/drop`);
    expect(again.status).toBe(404);
    expect((await json(again)).error.code).toBe('not_found');
    expect((await call(h.app, 'POST', `/v1/examples/quarantine/${ID(3)}/accept`)).status).toBe(404);
    const rows = h.registry.db.select({ id: examples.id, s: examples.labelState }).from(examples).all();
    expect(Object.fromEntries(rows.map((r) => [r.id, r.s]))).toEqual({ [ID(0)]: 'accepted', [ID(2)]: 'quarantined', [ID(3)]: null });
  });

  it('refuses malformed ids and queries with a 400 naming the field', async () => {
    const bad = await call(h.app, 'POST', '/v1/examples/quarantine/not-a-uuid/accept');
    expect(bad.status).toBe(400);
    expect((await json(bad)).error.field).toBe('id');
    expect((await call(h.app, 'GET', '/v1/examples/quarantine?limit=0')).status).toBe(400);
    expect((await call(h.app, 'GET', '/v1/examples/quarantine?bogus=1')).status).toBe(400);
  });

  it('apprentice examples quarantine list|accept|drop', async () => {
    const fetchImpl = (async (url: URL | string, init?: RequestInit) => {
      const u = new URL(String(url));
      return h.app.request(u.pathname + u.search, init);
    }) as typeof fetch;
    const run = (...argv: string[]) => captureProgram(new Command('apprentice').addCommand(examplesCommand({ fetchImpl })), ['examples', 'quarantine', ...argv, '--cloud', 'http://cloud.test', '--token', TOKEN]);
    const list = await run('list');
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(new RegExp(`^${ID(2)}  pi-1  digits  label 1 \\(teacher 0\\.0%\\), teacher says 0 \\(100\\.0%\\)`));
    expect((await run('drop', ID(2))).stdout).toBe(`dropped ${ID(2)}\n`);
    expect((await run('list')).stdout).toBe('no quarantined labels\n');
    const bad = await run('accept', 'nope');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/expected an example UUID/);
    expect((await run('accept', ID(2))).code).toBe(2); // 404: no longer in quarantine
    expect((await run('list', '--limit', 'x')).code).toBe(2);
  });
});
