import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseRange } from '../../../cloud/api/range.js';
import { call, harness, json, seedModel, seedRelease, type Harness } from './helpers.js';

describe('/v1/releases', () => {
  let h: Harness;
  const bytes = randomBytes(1000);
  let sha256: string;
  beforeAll(() => {
    h = harness();
    seedModel(h);
    seedModel(h, 'other');
    ({ sha256 } = seedRelease(h, { seq: 1, bytes: randomBytes(10) }));
    ({ sha256 } = seedRelease(h, { seq: 2, bytes }));
    seedRelease(h, { model: 'other', seq: 3, bytes: randomBytes(5) });
  });
  afterAll(() => h.close());

  const artifact = (headers: Record<string, string> = {}, seq = 2) => call(h.app, 'GET', `/v1/releases/${seq}/artifact`, { headers });
  const body = async (res: Response) => Buffer.from(await res.arrayBuffer());

  it('lists releases newest first, filtered by model', async () => {
    expect((await json(await call(h.app, 'GET', '/v1/releases'))).releases.map((r: { seq: number }) => r.seq)).toEqual([3, 2, 1]);
    const digits = await json(await call(h.app, 'GET', '/v1/releases?model=digits&limit=1'));
    expect(digits.releases).toHaveLength(1);
    expect(digits.releases[0]).toMatchObject({ seq: 2, model: 'digits', sha256, bytes: 1000, keyId: h.keys.active().keyId });
    expect((await json(await call(h.app, 'GET', '/v1/releases?model=bad/name'))).error.field).toBe('model');
    expect((await json(await call(h.app, 'GET', '/v1/releases?colour=1'))).error.field).toBe('colour');
  });

  it('shows one release with its manifest and signature', async () => {
    const r = await json(await call(h.app, 'GET', '/v1/releases/2'));
    expect(r).toMatchObject({ seq: 2, manifest: { model: 'digits', release: 2 }, signature: { alg: 'ed25519' } });
    expect((await call(h.app, 'GET', '/v1/releases/99')).status).toBe(404);
    expect((await json(await call(h.app, 'GET', '/v1/releases/abc'))).error).toMatchObject({ code: 'invalid_param', field: 'seq' });
  });

  it('serves the whole artifact with ETag = sha256 and Content-Length', async () => {
    const res = await artifact();
    expect(res.status).toBe(200);
    expect(res.headers.get('etag')).toBe(`"${sha256}"`);
    expect(res.headers.get('content-length')).toBe('1000');
    expect(res.headers.get('accept-ranges')).toBe('bytes');
    expect(res.headers.get('content-type')).toBe('application/octet-stream');
    expect((await body(res)).equals(bytes)).toBe(true);
  });

  it.each([
    ['first bytes', 'bytes=0-99', 0, 99],
    ['a middle range', 'bytes=100-199', 100, 199],
    ['a suffix range', 'bytes=-100', 900, 999],
    ['a suffix longer than the file', 'bytes=-5000', 0, 999],
    ['an open range', 'bytes=990-', 990, 999],
    ['an end past the file', 'bytes=500-5000', 500, 999],
  ])('serves %s as 206 with Content-Range', async (_n, range, start, end) => {
    const res = await artifact({ range });
    expect(res.status).toBe(206);
    expect(res.headers.get('content-range')).toBe(`bytes ${start}-${end}/1000`);
    expect(res.headers.get('content-length')).toBe(String(end - start + 1));
    expect(res.headers.get('etag')).toBe(`"${sha256}"`);
    expect((await body(res)).equals(bytes.subarray(start, end + 1))).toBe(true);
  });

  it.each(['bytes=1000-', 'bytes=5000-6000', 'bytes=-0', 'bytes=20-10', 'bytes=x-y', 'bytes=-'])('answers 416 JSON for %s', async (range) => {
    const res = await artifact({ range });
    expect(res.status).toBe(416);
    expect(res.headers.get('content-range')).toBe('bytes */1000');
    expect((await json(res)).error).toMatchObject({ code: 'range_not_satisfiable', field: 'range' });
  });

  it('ignores other units, multiple ranges and a stale If-Range; honours If-None-Match', async () => {
    expect((await artifact({ range: 'items=0-1' })).status).toBe(200);
    expect((await artifact({ range: 'bytes=0-1,5-6' })).status).toBe(200);
    expect((await artifact({ range: 'bytes=0-1', 'if-range': '"other"' })).status).toBe(200);
    expect((await artifact({ range: 'bytes=0-1', 'if-range': `"${sha256}"` })).status).toBe(206);
    const notModified = await artifact({ 'if-none-match': `"${sha256}"` });
    expect(notModified.status).toBe(304);
    expect((await body(notModified)).length).toBe(0);
  });

  it('answers HEAD with the headers only', async () => {
    const res = await call(h.app, 'HEAD', '/v1/releases/2/artifact');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-length')).toBe('1000');
    expect((await body(res)).length).toBe(0);
  });

  it('404 for a missing artifact file', async () => {
    const { sha256: gone } = seedRelease(h, { seq: 4, bytes: randomBytes(3) });
    rmSync(join(h.artifactsDir, `${gone}.onnx`));
    const res = await artifact({}, 4);
    expect(res.status).toBe(404);
    expect((await json(res)).error.code).toBe('artifact_missing');
  });

  it('parseRange', () => {
    expect(parseRange(undefined, 10)).toEqual({ kind: 'full' });
    expect(parseRange('bytes=0-0', 10)).toEqual({ kind: 'partial', start: 0, end: 0 });
    expect(parseRange('bytes=-1', 10)).toEqual({ kind: 'partial', start: 9, end: 9 });
    expect(parseRange('bytes=0-', 0)).toEqual({ kind: 'unsatisfiable' });
    expect(parseRange('BYTES= 2-3', 10)).toEqual({ kind: 'partial', start: 2, end: 3 });
  });
});
