/**
 * Issue 10 item 11, HTTP side: the routes the trust work added, under seeded malformed requests.
 * `/v1/artifacts/{sha256}` (sha, Range and Authorization headers), `/v1/examples/quarantine`,
 * `PUT /v1/keys/keyset`, and the edge's `/v1/feedback` (labels on a real prediction, with a token).
 * Every refusal is a 4xx with the one JSON error shape; nothing is served without valid credentials;
 * no state changes.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../../cloud/provision/passwd.js';
import { examples } from '../../../cloud/registry/schema.js';
import { draftKeySet } from '../../../cloud/keys/keyset-file.js';
import { generateSigningKey, signKeySet, toTrustedKey } from '../../../shared/manifest/index.js';
import { harness as edgeHarness, post, type Harness as EdgeHarness } from '../api/helpers.js';
import { call, harness, seedDevice, seedExample, seedModel, seedRelease, TOKEN, type Harness } from '../cloud-api/helpers.js';
import { Gen } from './gen.js';

const basic = (user: string, pass: string) => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;

async function expectJsonError(res: Response, what: string): Promise<number> {
  const text = await res.text();
  expect(res.status, `${what}: ${res.status} ${text.slice(0, 200)}`).toBeGreaterThanOrEqual(400);
  expect(res.status, `${what}: ${text.slice(0, 200)}`).toBeLessThan(500);
  const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
  expect(typeof body.error?.code, what).toBe('string');
  expect(typeof body.error?.message, what).toBe('string');
  return res.status;
}

describe('cloud routes', () => {
  let h: Harness;
  let sha256: string;
  const bytes = randomBytes(3000);
  const quarantinedId = randomUUID();
  beforeAll(() => {
    h = harness({ artifacts: { clientAddress: () => '127.0.0.1' } });
    seedModel(h);
    ({ sha256 } = seedRelease(h, { seq: 1, bytes }));
    seedDevice(h, 'pi-1', { credentialHash: hashPassword('s3cret') });
    seedExample(h, { id: quarantinedId, input: [0, 0, 0, 0], label: 1, reason: 'feedback' });
    h.registry.db.update(examples).set({ labelState: 'quarantined' }).where(eq(examples.id, quarantinedId)).run();
  });
  afterAll(() => h.close());

  it('/v1/artifacts: bytes only for valid credentials and a stored sha256; every other answer a 4xx JSON error', async () => {
    const g = new Gen(2001);
    const statuses = new Map<number, number>();
    for (let i = 0; i < 600; i++) {
      const goodAuth = g.chance(0.3);
      const auth = goodAuth
        ? g.pick([basic('pi-1', 's3cret'), `Bearer ${TOKEN}`])
        : g.pick([() => basic('pi-1', g.str(12)), () => basic(g.str(20), 's3cret'), () => `Basic ${g.junk(40).toString('base64')}`, () => `Bearer ${g.str(40).replace(/\s/g, '')}`, () => `${g.str(8)} ${g.str(20)}`, () => basic('pi-1', 's3cret').toLowerCase(), () => `Basic ${Buffer.from('pi-1').toString('base64')}`])();
      const goodSha = g.chance(0.5);
      const sha = goodSha ? sha256 : g.pick([() => sha256.toUpperCase(), () => sha256.slice(1), () => randomBytes(32).toString('hex'), () => encodeURIComponent(g.text(64)), () => '..%2F..%2Fregistry.db'])();
      const range = g.pick([undefined, 'bytes=0-99', `bytes=${g.int(4000)}-${g.int(4000)}`, `bytes=-${g.int(5000)}`, `bytes=${g.str(8)}`, g.str(15), 'bytes=0-1,5-9', `bytes=${2 ** 60}-`]);
      const headers: Record<string, string> = {};
      if (!g.chance(0.05)) headers.authorization = auth.replace(/[\r\n\u0000]/g, '');
      if (range !== undefined) headers.range = range.replace(/[\r\n\u0000]/g, '');
      let res: Response;
      try {
        res = await h.app.request(`/v1/artifacts/${sha}`, { headers });
      } catch (err) {
        // A header value Fetch itself refuses never reaches the route.
        expect(err, `case ${i}`).toBeInstanceOf(TypeError);
        continue;
      }
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      const what = `case ${i} ${JSON.stringify({ sha: sha.slice(0, 70), headers }).slice(0, 300)}`;
      if (res.status === 200 || res.status === 206) {
        expect(goodAuth && goodSha && headers.authorization !== undefined, what).toBe(true);
        const got = Buffer.from(await res.arrayBuffer());
        expect(bytes.includes(got) || got.length === 0, what).toBe(true);
      } else {
        await expectJsonError(res, what);
      }
    }
    expect([...statuses.keys()]).toEqual(expect.arrayContaining([200, 400, 401, 404]));
  });

  it('/v1/examples/quarantine: malformed ids and queries are 4xx; the quarantined label is untouched', async () => {
    const g = new Gen(2002);
    for (let i = 0; i < 300; i++) {
      const id = g.pick([() => randomUUID(), () => encodeURIComponent(g.text(40)), () => quarantinedId.toUpperCase().replace(/-/g, ''), () => `${quarantinedId}x`])();
      const what = `case ${i} ${id}`;
      if (g.chance(0.3)) {
        const q = new URLSearchParams({ [g.pick(['limit', 'model', 'x', 'offset'])]: String(g.odd()).slice(0, 100) });
        const res = await call(h.app, 'GET', `/v1/examples/quarantine?${q}`);
        if (res.status !== 200) await expectJsonError(res, `${what} ?${q}`);
        continue;
      }
      await expectJsonError(await call(h.app, 'POST', `/v1/examples/quarantine/${id}/${g.pick(['accept', 'drop'])}`, { body: g.json() }), what);
    }
    const row = h.registry.db.select({ labelState: examples.labelState }).from(examples).where(eq(examples.id, quarantinedId)).get();
    expect(row?.labelState).toBe('quarantined');
  });

  it('PUT /v1/keys/keyset: a mutated signed key set is refused; nothing is published', async () => {
    const g = new Gen(2003);
    const root = generateSigningKey();
    const signed = signKeySet(draftKeySet({ keys: h.keys.list(), root: toTrustedKey(root), expiresDays: 30 }), [root.privateKeyPem]);
    for (let i = 0; i < 150; i++) {
      const bad = i % 5 === 0 ? g.junk(200).toString('latin1') : g.mutate(signed);
      await expectJsonError(await call(h.app, 'PUT', '/v1/keys/keyset', { body: typeof bad === 'string' ? bad : JSON.stringify(bad), headers: { 'content-type': 'application/json' } }), `case ${i}`);
    }
    expect((await call(h.app, 'GET', '/v1/keys/keyset')).status).toBe(404);
  });
});

describe('edge /v1/feedback with a token', () => {
  let e: EdgeHarness;
  const token = 'fuzz-token-0123456789abcdef';
  beforeAll(async () => {
    e = await edgeHarness({ token, limits: { feedbackPerMinute: 100_000 } });
  });
  afterAll(() => e.close());

  it('a mutated label or a wrong token is a 4xx JSON error; no label is kept', async () => {
    const g = new Gen(2004);
    const pred = await post(e.app, '/v1/predict', { input: Array.from({ length: 784 }, () => g.float()) }, { authorization: `Bearer ${token}` });
    expect(pred.status).toBe(200);
    const id = ((await pred.json()) as { id: string }).id;
    for (let i = 0; i < 300; i++) {
      const goodToken = g.chance(0.7);
      const auth = goodToken ? `Bearer ${token}` : g.pick([`Bearer ${token}x`, `Basic ${token}`, g.str(30).replace(/[\r\n\u0000]/g, ''), `Bearer ${token.slice(1)}`]);
      const body = goodToken ? g.mutate({ id, label: 3 }) : { id, label: 3 };
      // A mutation that is still a valid label for this prediction is no fuzz case.
      if (goodToken && typeof body === 'object' && body !== null && (body as { id?: unknown }).id === id && Number.isInteger((body as { label?: unknown }).label) && ((body as { label: number }).label >= 0 && (body as { label: number }).label < 10) && Object.keys(body).length === 2) continue;
      let res: Response;
      try {
        res = await post(e.app, '/v1/feedback', body, { authorization: auth });
      } catch (err) {
        expect(err, `case ${i}`).toBeInstanceOf(TypeError);
        continue;
      }
      await expectJsonError(res, `case ${i} ${auth.slice(0, 40)} ${JSON.stringify(body)?.slice(0, 200)}`);
    }
    expect(e.feedback).toEqual([]);
  });
});
