import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatFloat32 } from '../../../cloud/api/examples.js';
import { loadDataset } from '../../../shared/data/index.js';
import { call, harness, json, seedExample, seedModel, type Harness } from './helpers.js';

describe('/v1/examples', () => {
  let h: Harness;
  const inputs: number[][] = [];
  beforeAll(() => {
    // A tiny page size so the export crosses several keyset pages.
    h = harness({ limits: { exportBatchRows: 3 } });
    seedModel(h);
    seedModel(h, 'other');
    for (let i = 0; i < 8; i++) {
      const input = [i / 7, i ? -i * 1e-7 : 0, 0.1 * i, 1e20 * i];
      inputs.push(input);
      seedExample(h, { id: `00000000-0000-4000-8000-00000000000${i}`, deviceId: i % 2 ? 'pi-1' : 'pi-2', input, label: i < 5 ? i % 3 : null, reason: i < 6 ? 'low_margin' : 'feedback', releaseSeq: i < 4 ? 1 : null, ingestedAt: `2024-01-0${1 + (i >> 1)}T00:00:00.000Z` });
    }
    seedExample(h, { model: 'other', input: [1, 2, 3, 4] });
    seedExample(h, { deviceId: 'pi-3', input: [1, 2, 3] }); // wrong size: skipped by the export
  });
  afterAll(() => h.close());

  const exportCsv = async (query: string) => {
    const res = await call(h.app, 'GET', `/v1/examples/export?${query}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/csv; charset=utf-8');
    return res.text();
  };
  const load = async (text: string, name: string) => {
    const file = join(h.dir, name);
    writeFileSync(file, text);
    return loadDataset(`csv:${file}`);
  };
  const f32 = (rows: number[][]) => Array.from(new Float32Array(rows.flat()));

  it('counts by device, reason and release', async () => {
    const all = await json(await call(h.app, 'GET', '/v1/examples/stats'));
    expect(all).toEqual({
      total: 10,
      labelled: 5,
      byDevice: { 'pi-1': 5, 'pi-2': 4, 'pi-3': 1 },
      byReason: { low_margin: 6, feedback: 2, low_confidence: 2 },
      byRelease: { '1': 6, none: 4 },
      // No retention configured in this harness: no limits, nothing deleted (test/unit/cloud-api/retention.test.ts).
      retention: {
        digits: { maxRows: null, maxAgeDays: null, deletedByAge: 0, deletedByRows: 0, skippedForRound: 0, lastRunAt: null },
        other: { maxRows: null, maxAgeDays: null, deletedByAge: 0, deletedByRows: 0, skippedForRound: 0, lastRunAt: null },
      },
      quarantined: 0,
      ingestByDevice: {},
    });
    expect((await json(await call(h.app, 'GET', '/v1/examples/stats?model=other'))).total).toBe(1);
  });

  it('exports labelled examples as a CSV that loadDataset reads back exactly', async () => {
    const text = await exportCsv('model=digits&labelled=true&format=csv');
    expect(text.split('\n')[0]).toBe('x0,x1,x2,x3,label');
    const ds = await load(text, 'labelled.csv');
    expect(ds.count).toBe(5);
    expect(ds.shape).toEqual([4]);
    expect(Array.from(ds.labels!)).toEqual([0, 1, 2, 0, 1]);
    expect(Array.from(ds.features)).toEqual(f32(inputs.slice(0, 5)));
  });

  it('exports unlabelled-only and all examples without a label column', async () => {
    const unlabelled = await load(await exportCsv('model=digits&labelled=false'), 'unlabelled.csv');
    expect(unlabelled.count).toBe(3);
    expect(unlabelled.labels).toBeUndefined();
    expect(Array.from(unlabelled.features)).toEqual(f32(inputs.slice(5)));
    const everything = await exportCsv('model=digits');
    expect(everything.split('\n')[0]).toBe('x0,x1,x2,x3');
    expect((await load(everything, 'all.csv')).count).toBe(8);
  });

  it('filters by ingestion time', async () => {
    const ds = await load(await exportCsv(`model=digits&since=${encodeURIComponent('2024-01-03T01:00:00+01:00')}`), 'since.csv');
    expect(ds.count).toBe(4);
  });

  it('rejects bad queries naming the field, 404 for an unknown model', async () => {
    for (const [q, field] of [['', 'model'], ['model=digits&format=json', 'format'], ['model=digits&labelled=yes', 'labelled'], ['model=digits&since=yesterday', 'since'], ['model=digits&x=1', 'x']]) {
      const res = await call(h.app, 'GET', `/v1/examples/export?${q}`);
      expect(res.status, q).toBe(400);
      expect((await json(res)).error).toMatchObject({ code: 'invalid_query', field });
    }
    expect((await call(h.app, 'GET', '/v1/examples/export?model=ghost')).status).toBe(404);
  });

  it('formats float32 values as the shortest round-tripping decimal', () => {
    for (const v of [0.1, 1 / 3, -2.5e-8, 3.4028234663852886e38, 1e-45, 123456.789, 0, -0, 7]) {
      const f = Math.fround(v);
      expect(Math.fround(Number(formatFloat32(f))) === f).toBe(true);
    }
    expect(formatFloat32(Math.fround(0.1))).toBe('0.1');
    expect(formatFloat32(-0)).toBe('0');
  });
});
