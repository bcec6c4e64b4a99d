import { createHmac } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { devices } from '../../../cloud/registry/schema.js';
import { harness, seedModel, seedRelease, TOKEN, type Harness } from '../cloud-api/helpers.js';

/**
 * The console's HTTP surface through app.request (no socket, no browser): what it serves without a
 * session, the login exchange, the cookie's flags, refusals of forged, expired and revoked sessions, the
 * CSRF check on every state-changing request, and 400s for malformed filters.
 */
const html = { accept: 'text/html' };
const form = (fields: Record<string, string>) => ({ method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(fields).toString() });

describe('console over HTTP', () => {
  let h: Harness;
  let cookie: string;
  let csrf: string;

  beforeAll(async () => {
    h = harness({ console: { liveIntervalMs: 100 } });
    seedModel(h);
    seedRelease(h, { seq: 1, bytes: Buffer.from('release one') });
    h.registry.db.insert(devices).values({ id: 'd'.repeat(64), groups: ['lab'], credentialHash: 'x', online: true, lastSeen: new Date().toISOString() }).run();
    h.registry.db.insert(devices).values({ id: 'pi-2', groups: ['yard'], credentialHash: 'x', online: false, lastSeen: new Date().toISOString() }).run();
  });
  afterAll(() => h.close());

  async function login(token = TOKEN, who = 'ada'): Promise<Response> {
    return h.app.request('/ui/login', form({ token, who, next: '/ui/devices' }));
  }
  const get = (path: string, c = cookie, headers: Record<string, string> = html) => h.app.request(path, { headers: { ...headers, cookie: c } });

  it('serves only the login page and the vendored assets without a session', async () => {
    const page = await h.app.request('/ui/', { headers: html });
    expect(page.status).toBe(303);
    expect(page.headers.get('location')).toBe('/ui/login?next=%2Fui%2F');
    for (const p of ['/ui/devices', '/ui/rollouts', '/ui/examples', '/ui/keys', '/ui/audit', '/ui/devices/pi-2']) {
      const r = await h.app.request(p, { headers: { 'hx-request': 'true' } });
      expect(r.status, p).toBe(401);
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe('unauthorized');
    }
    expect((await h.app.request('/ui/login')).status).toBe(200);
    const js = await h.app.request('/ui/assets/htmx.min.js');
    expect(js.status).toBe(200);
    expect(js.headers.get('content-type')).toMatch(/javascript/);
    expect((await js.text()).length).toBeGreaterThan(10_000);
    expect((await h.app.request('/ui/assets/uPlot.min.js')).status).toBe(200);
    expect((await h.app.request('/ui/assets/nope.js')).status).toBe(404);
    // The bearer token does not open the console, and the console is not in the API's OpenAPI document.
    expect((await h.app.request('/ui/devices', { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(401);
    const doc = (await (await h.app.request('/openapi.json')).json()) as { paths: Record<string, unknown> };
    expect(Object.keys(doc.paths).filter((p) => p.startsWith('/ui'))).toEqual([]);
  });

  it('refuses a wrong admin token; the right one gives an HttpOnly SameSite=Strict cookie with an expiry', async () => {
    const bad = await login('wrong-token-wrong-token');
    expect(bad.status).toBe(401);
    expect(bad.headers.get('set-cookie')).toBeNull();
    const ok = await login();
    expect(ok.status).toBe(303);
    expect(ok.headers.get('location')).toBe('/ui/devices');
    const set = ok.headers.get('set-cookie')!;
    expect(set).toMatch(/HttpOnly/);
    expect(set).toMatch(/SameSite=Strict/);
    expect(set).toMatch(/Max-Age=28800/);
    expect(set).toMatch(/Path=\/ui/);
    cookie = set.split(';')[0]!;
    const page = await get('/ui/');
    expect(page.status).toBe(200);
    const body = await page.text();
    csrf = /name="_csrf" value="([^"]+)"/.exec(body)![1]!;
    expect(body).toContain('signed in as ada');
    expect(body).toMatch(/id="tile-total" data-count="2"/);
    expect(body).toMatch(/id="tile-online" data-count="1"/);
  });

  it('an open redirect in next is refused (goes to /ui/)', async () => {
    const r = await h.app.request('/ui/login', form({ token: TOKEN, next: '//evil.example/ui' }));
    expect(r.headers.get('location')).toBe('/ui/');
  });

  it('renders every page; the device list is filtered and paged on the server; 64-char ids render', async () => {
    for (const p of ['/ui/devices', '/ui/rollouts', '/ui/examples', '/ui/keys', '/ui/audit', `/ui/devices/${'d'.repeat(64)}`]) expect((await get(p)).status, p).toBe(200);
    const yard = await (await get('/ui/devices?q=yard')).text();
    expect(yard).toContain('data-total="1"');
    expect(yard).toContain('pi-2');
    expect(await (await get('/ui/devices?state=online')).text()).toContain('d'.repeat(64));
    const audit = await (await get('/ui/audit')).text();
    expect(audit).toContain('session.login');
  });

  it('answers malformed filters with a 400 naming the field', async () => {
    for (const p of ['/ui/devices?state=bogus', '/ui/devices?release=-1', '/ui/examples?reason=nope', '/ui/examples?since=yesterday', '/ui/audit?before=x']) {
      const r = await get(p);
      expect(r.status, p).toBe(400);
      expect(((await r.json()) as { error: { code: string; message: string } }).error.code).toBe('invalid_query');
    }
    expect((await get('/ui/devices/nobody')).status).toBe(404);
  });

  it('refuses tampered, garbage and expired cookies', async () => {
    const [name, value] = cookie.split('=') as [string, string];
    const decoded = decodeURIComponent(value);
    const [payload, sig] = decoded.split('.') as [string, string];
    const s = JSON.parse(Buffer.from(payload, 'base64url').toString());
    const forged = Buffer.from(JSON.stringify({ ...s, who: 'mallory' })).toString('base64url');
    for (const c of [`${name}=${encodeURIComponent(`${forged}.${sig}`)}`, `${name}=garbage`, `${name}=${encodeURIComponent('x.y.z')}`, `${name}=`]) {
      expect((await get('/ui/', c)).status, c).toBe(303);
    }
    // Correctly signed (with the registry's secret) but past its expiry.
    const secret = h.registry.sqlite.prepare("select value from meta where key = 'ui.session-secret'").get() as { value: string };
    const old = Buffer.from(JSON.stringify({ ...s, exp: Date.now() - 1000 })).toString('base64url');
    const oldSig = createHmac('sha256', secret.value).update(old).digest('base64');
    expect((await get('/ui/', `${name}=${encodeURIComponent(`${old}.${oldSig}`)}`)).status).toBe(303);
    // The same signing with a live expiry passes: the test above failed on the expiry, not the signature.
    const live = Buffer.from(JSON.stringify({ ...s, exp: Date.now() + 60_000 })).toString('base64url');
    const liveSig = createHmac('sha256', secret.value).update(live).digest('base64');
    expect((await get('/ui/', `${name}=${encodeURIComponent(`${live}.${liveSig}`)}`)).status).toBe(200);
  });

  it('refuses a state-changing request without the CSRF token or with a forged one', async () => {
    for (const headers of [{}, { 'x-csrf-token': 'forged' }, { 'x-csrf-token': csrf.slice(0, -2) + 'AA' }] as Record<string, string>[]) {
      const r = await h.app.request('/ui/rollouts/r1/pause', { method: 'POST', headers: { ...headers, cookie } });
      expect(r.status).toBe(403);
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe('csrf');
    }
    const f = await h.app.request('/ui/logout', { ...form({ _csrf: 'forged' }), headers: { 'content-type': 'application/x-www-form-urlencoded', cookie } });
    expect(f.status).toBe(403);
  });

  let rolloutId: string;
  it('a console action goes through the API and is audited with the session as actor', async () => {
    const created = await h.app.request('/v1/rollouts', { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ model: 'digits', release: 1, target: 'all', canaryShare: 0.5, soakSeconds: 60, failureThreshold: 0.2 }) });
    expect(created.status).toBe(201);
    rolloutId = ((await created.json()) as { id: string }).id;
    const r = await h.app.request(`/ui/rollouts/${rolloutId}/pause`, { method: 'POST', headers: { cookie, 'x-csrf-token': csrf, 'hx-request': 'true' } });
    expect(r.status).toBe(200);
    expect(await r.text()).toContain('data-paused="true"');
    const { entries } = (await (await h.app.request('/v1/audit', { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as { entries: { actor: string; action: string; target: string }[] };
    const pause = entries.find((e) => e.action === 'rollout.pause')!;
    expect(pause).toMatchObject({ target: rolloutId });
    expect(pause.actor).toMatch(/^session:[\w-]{12}\/ada$/);
    expect(entries.filter((e) => e.action === 'rollout.pause')).toHaveLength(1); // once, not by the console and the API both
  });

  it('an open SSE stream sends changes, and ends once its session logs out', async () => {
    const res = await h.app.request(`/ui/rollouts/${rolloutId}/live`, { headers: { cookie } });
    expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
    const reader = res.body!.getReader();
    const text = async (): Promise<string | undefined> => {
      const { done, value } = await reader.read();
      return done ? undefined : Buffer.from(value).toString();
    };
    expect(await text()).toMatch(/event: progress[\s\S]*data-paused="true"/);
    await h.app.request(`/v1/rollouts/${rolloutId}/resume`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } });
    expect(await text()).toContain('data-paused="false"');
    // A second cookie of the same session logs out; the next change must not reach this stream.
    const out = await h.app.request('/ui/logout', { ...form({ _csrf: csrf }), headers: { 'content-type': 'application/x-www-form-urlencoded', cookie } });
    expect(out.status).toBe(303);
    await h.app.request(`/v1/rollouts/${rolloutId}/pause`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } });
    expect(await text()).toBeUndefined(); // the stream ended instead of sending the paused state
    cookie = (await login()).headers.get('set-cookie')!.split(';')[0]!;
    csrf = /name="_csrf" value="([^"]+)"/.exec(await (await get('/ui/')).text())![1]!;
  });

  it('logout ends the session for good: the old cookie is refused afterwards', async () => {
    const out = await h.app.request('/ui/logout', { ...form({ _csrf: csrf }), headers: { 'content-type': 'application/x-www-form-urlencoded', cookie } });
    expect(out.status).toBe(303);
    expect(out.headers.get('set-cookie')).toMatch(/Max-Age=0/);
    expect((await get('/ui/')).status).toBe(303);
    const audit = (await (await login()).headers.get('set-cookie'))!.split(';')[0]!;
    expect(await (await get('/ui/audit', audit)).text()).toContain('session.logout');
  });
});
