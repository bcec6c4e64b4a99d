import { randomUUID } from 'node:crypto';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { devices, examples, releases, rollouts, rounds } from '../../../cloud/registry/schema.js';
import { harness, seedExample, seedModel, seedRelease, TOKEN, type Harness } from '../cloud-api/helpers.js';

/**
 * The rounds, releases and quarantine views of the console over HTTP (app.request): what each page shows
 * from the registry, the live round stream, the artifact download behind the session, and the
 * quarantine actions (CSRF, audited with the session as actor).
 */
const form = (fields: Record<string, string>) => ({ method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(fields).toString() });

describe('console rounds, releases and quarantine', () => {
  let h: Harness;
  let cookie: string;
  let csrf: string;
  const artifact = Buffer.from('onnx bytes of release two');
  const q1 = randomUUID();
  const q2 = randomUUID();
  const metrics = (acc: number, pass: boolean) => ({ holdoutAccuracy: acc, teacherHoldoutAccuracy: 0.95, holdoutAgreement: acc + 0.01, hardAgreement: acc - 0.1, gate: { pass, reason: pass ? `holdout accuracy ${acc} ≥ parent` : `holdout accuracy ${acc} < parent` } });

  beforeAll(async () => {
    // A long summary TTL: the cache test below must not depend on how fast this machine is.
    h = harness({ console: { liveIntervalMs: 50, summaryTtlMs: 600_000 } });
    seedModel(h);
    seedRelease(h, { seq: 1, bytes: Buffer.from('release one') });
    seedRelease(h, { seq: 2, bytes: artifact });
    seedRelease(h, { seq: 3, bytes: Buffer.from('release three') });
    const db = h.registry.db;
    db.update(releases).set({ parentSeq: 1, roundId: 'r-2', manifest: { v: 1, model: 'digits', release: 2, teacher: { id: 'teacher-abc' }, lineage: { exampleCount: 321, round: 'r-2' } } }).where(eq(releases.seq, 2)).run();
    db.update(releases).set({ parentSeq: 2 }).where(eq(releases.seq, 3)).run();
    const t = (m: number) => new Date(Date.UTC(2026, 10, 1, 0, m)).toISOString();
    db.insert(rounds).values({ id: 'r-1', model: 'digits', state: 'released', trigger: 'manual', metrics: metrics(0.8, true), releaseSeq: 1, startedAt: t(0), finishedAt: t(1), createdAt: t(0) }).run();
    db.insert(rounds).values({ id: 'r-2', model: 'digits', state: 'released', trigger: 'schedule', metrics: metrics(0.85, true), releaseSeq: 2, startedAt: t(2), finishedAt: t(3), createdAt: t(2) }).run();
    db.insert(rounds).values({ id: 'r-3', model: 'digits', state: 'rejected', trigger: 'schedule', metrics: metrics(0.7, false), error: 'holdout accuracy 0.7 < parent', startedAt: t(4), finishedAt: t(5), createdAt: t(4) }).run();
    db.insert(rounds).values({ id: 'r-4', model: 'digits', state: 'running', trigger: 'manual', progress: { phase: 'train', epoch: 3, epochs: 10, loss: 0.25, at: t(6) }, startedAt: t(6), createdAt: t(6) }).run();
    for (const id of [q1, q2]) {
      seedExample(h, { id, input: [0.1, 0.2, 0.3, 0.4], label: 2, reason: 'feedback' });
      db.update(examples).set({ labelState: 'quarantined' }).where(eq(examples.id, id)).run();
    }
    const set = (await h.app.request('/ui/login', form({ token: TOKEN, who: 'grace' }))).headers.get('set-cookie')!;
    cookie = set.split(';')[0]!;
    csrf = /name="_csrf" value="([^"]+)"/.exec(await (await get('/ui/')).text())![1]!;
  });
  afterAll(() => h.close());

  const get = (path: string, headers: Record<string, string> = {}) => h.app.request(path, { headers: { accept: 'text/html', ...headers, cookie } });

  it('the overview tiles are cached (2 s by default), and dropped at once by a change through the API', async () => {
    const tile = async () => Number(/id="tile-total" data-count="(\d+)"/.exec(await (await get('/ui/')).text())![1]);
    const before = await tile();
    // A write the API did not make (as ingest's): the cached summary stands.
    h.registry.db.insert(devices).values({ id: 'quiet-1', groups: [], credentialHash: 'x' }).run();
    expect(await tile()).toBe(before);
    // Provisioning through the API drops it: the next overview counts both new devices.
    const made = await h.app.request('/v1/devices', { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ id: 'api-1' }) });
    expect(made.status).toBe(201);
    expect(await tile()).toBe(before + 2);
  });

  it('the overview shows the agent-version distribution (issue 14)', async () => {
    h.registry.db.insert(devices).values([
      { id: 'agent-a', groups: [], credentialHash: 'x', agent: 'apprentice-edge/0.2.0', platform: 'linux-x64' },
      { id: 'agent-b', groups: [], credentialHash: 'x', agent: 'apprentice-edge/0.2.0', platform: 'linux-x64' },
      { id: 'agent-c', groups: [], credentialHash: 'x', agent: 'apprentice-edge/0.1.0', platform: 'linux-arm64' },
    ]).run();
    // A change through the API drops the cached summary.
    await h.app.request('/v1/devices', { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ id: 'api-agent' }) });
    const html = await (await get('/ui/')).text();
    expect(html).toContain('<h2>Agent versions</h2>');
    expect(html).toMatch(/aria-label="agent versions: apprentice-edge\/0.2.0 \(linux-x64\) on 2, apprentice-edge\/0.1.0 \(linux-arm64\) on 1"/);
  });

  it('agent rollouts are listed and shown as such (issue 14)', async () => {
    h.registry.db.insert(rollouts).values({ id: 'ro-agent', model: 'agent:linux-x64', kind: 'agent', releaseSeq: 5, target: { kind: 'all' }, canaryShare: 0.1, soakSeconds: 0, failureThreshold: 0.2, state: 'completed' }).run();
    const list = await (await get('/ui/rollouts')).text();
    expect(list).toMatch(/ro-agent<\/a><\/td><td>agent \(linux-x64\)<\/td><td>agentSeq 5<\/td>/);
    const page = await get('/ui/rollouts/ro-agent');
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('Agent rollout (linux-x64) agentSeq 5');
  });

  it('refuses the new pages and the download without a session', async () => {
    for (const p of ['/ui/rounds', '/ui/rounds/r-1', '/ui/rounds/r-4/live', '/ui/releases', '/ui/releases/2', '/ui/releases/2/artifact']) {
      const r = await h.app.request(p, { headers: { 'hx-request': 'true' } });
      expect(r.status, p).toBe(401);
    }
  });

  it('rounds: the chart has the three scored rounds oldest first, gate passes and refusals marked', async () => {
    const body = await (await get('/ui/rounds')).text();
    const attr = /data-series="([^"]+)"/.exec(body)![1]!.replaceAll('&quot;', '"');
    const d = JSON.parse(attr) as { x: number[]; y: number[]; series: { label: string; values: (number | null)[] }[] };
    const s = (label: string) => d.series.find((x) => x.label === label)!.values;
    expect(d.x).toHaveLength(3);
    expect(d.y).toEqual([0.5, 1]); // the lowest value (0.6) minus a margin, to 100%
    expect(s('student holdout')).toEqual([0.8, 0.85, 0.7]);
    expect(s('teacher holdout')).toEqual([0.95, 0.95, 0.95]);
    expect(s('recent hard (vs teacher)').map((v) => Number(v!.toFixed(2)))).toEqual([0.7, 0.75, 0.6]);
    expect(s('gate passed')).toEqual([0.8, 0.85, null]);
    expect(s('gate refused')).toEqual([null, null, 0.7]);
    expect(body).toContain('data-rounds="3"');
    expect(body).toMatch(/data-round="r-4"[\s\S]*running \(train\)/);
  });

  it('a running round streams its progress over SSE, read from the registry', async () => {
    const page = await (await get('/ui/rounds/r-4')).text();
    expect(page).toContain('sse-connect="/ui/rounds/r-4/live"');
    expect(page).toContain('aria-valuenow="3"');
    const res = await get('/ui/rounds/r-4/live');
    expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
    const reader = res.body!.getReader();
    const next = async () => Buffer.from((await reader.read()).value!).toString();
    expect(await next()).toMatch(/event: progress[\s\S]*epoch 3\/10/);
    h.registry.db.update(rounds).set({ progress: { phase: 'evaluate', detail: 'holdout 500', at: new Date().toISOString() } }).where(eq(rounds.id, 'r-4')).run();
    expect(await next()).toMatch(/data-phase="evaluate"[\s\S]*holdout 500/);
    h.registry.db.update(rounds).set({ state: 'released', releaseSeq: 3, metrics: metrics(0.9, true) }).where(eq(rounds.id, 'r-4')).run();
    expect(await next()).toMatch(/Gate: <strong class="ok">passed[\s\S]*release 3/);
    await reader.cancel();
  });

  it('a finished round shows its gate decision and metrics; an unknown one is a 404', async () => {
    const body = await (await get('/ui/rounds/r-3')).text();
    expect(body).toMatch(/Gate: <strong class="error">refused<\/strong> — holdout accuracy 0.7 &lt; parent/);
    expect(body).toMatch(/data-metric="holdoutAccuracy">70.0%/);
    expect((await get('/ui/rounds/nope')).status).toBe(404);
    expect((await get('/ui/rounds?model=nope')).status).toBe(400);
  });

  it('releases: lineage (parent, child), teacher, data, key id, manifest', async () => {
    const list = await (await get('/ui/releases')).text();
    for (const seq of [1, 2, 3]) expect(list).toContain(`data-release="${seq}"`);
    const body = await (await get('/ui/releases/2')).text();
    expect(body).toMatch(/id="lineage"[\s\S]*release 1[\s\S]*release 2/);
    expect(body).toMatch(/id="children">Children: <a href="\/ui\/releases\/3">release 3/);
    expect(body).toContain('id="teacher">teacher-abc');
    expect(body).toContain('id="data">321 hard examples');
    expect(body).toContain(`id="key-id">${h.keys.active().keyId}`);
    expect(body).toContain('href="/ui/rounds/r-2"');
    expect(body).toContain('id="manifest"');
    expect((await get('/ui/releases/99')).status).toBe(404);
    expect((await get('/ui/releases/x')).status).toBe(400);
  });

  it('downloads the artifact through the API route with the session (and Range)', async () => {
    const r = await get('/ui/releases/2/artifact');
    expect(r.status).toBe(200);
    expect(r.headers.get('content-disposition')).toContain('digits-2.onnx');
    expect(Buffer.from(await r.arrayBuffer())).toEqual(artifact);
    const part = await get('/ui/releases/2/artifact', { range: 'bytes=0-3' });
    expect(part.status).toBe(206);
    expect(await part.text()).toBe('onnx');
  });

  it('quarantined labels: listed, accepted and dropped with CSRF, audited with the session', async () => {
    const page = await (await get('/ui/examples')).text();
    expect(page).toContain(`data-quarantined="${q1}"`);
    expect(page).toContain(`data-quarantined="${q2}"`);
    const forged = await h.app.request(`/ui/examples/quarantine/${q1}/accept`, { method: 'POST', headers: { cookie, 'x-csrf-token': 'forged', 'hx-request': 'true' } });
    expect(forged.status).toBe(403);
    const acc = await h.app.request(`/ui/examples/quarantine/${q1}/accept`, { method: 'POST', headers: { cookie, 'x-csrf-token': csrf, 'hx-request': 'true' } });
    expect(acc.status).toBe(200);
    expect(await acc.text()).toContain('data-outcome="accepted"');
    const drop = await h.app.request(`/ui/examples/quarantine/${q2}/drop`, { method: 'POST', headers: { cookie, 'x-csrf-token': csrf, 'hx-request': 'true' } });
    expect(await drop.text()).toContain('data-outcome="dropped"');
    // The promise, in the registry: one accepted, one gone; each audited once with the session.
    expect(h.registry.db.select({ s: examples.labelState }).from(examples).where(eq(examples.id, q1)).get()?.s).toBe('accepted');
    expect(h.registry.db.select().from(examples).where(eq(examples.id, q2)).get()).toBeUndefined();
    const again = await h.app.request(`/ui/examples/quarantine/${q1}/accept`, { method: 'POST', headers: { cookie, 'x-csrf-token': csrf, 'hx-request': 'true' } });
    expect(again.status).toBe(404);
    const { entries } = (await (await h.app.request('/v1/audit', { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as { entries: { actor: string; action: string; target: string }[] };
    const labels = entries.filter((e) => e.action.startsWith('label.'));
    expect(labels.map((e) => [e.action, e.target]).sort()).toEqual([['label.accept', q1], ['label.drop', q2]]);
    for (const e of labels) expect(e.actor).toMatch(/^session:[\w-]{12}\/grace$/);
    expect(await (await get('/ui/examples')).text()).not.toContain('data-quarantined=');
  });
});
