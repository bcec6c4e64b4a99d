/**
 * The fleet console in a real browser (issue 12): Debian's chromium driven by playwright-core, against the
 * real cloud (private Mosquitto, registry, rollout engine) with three in-process edge daemons that installed
 * a signed release and sent hard examples and telemetry. One scenario, in order: refused without a session,
 * log in, overview = API, a device's telemetry chart draws, a rollout progresses live over SSE, pause and
 * resume from the buttons (audited), a forged CSRF token is refused, thumbnails render, no serious or
 * critical axe-core issue and no horizontal scroll on any page at 1280×800 and 375×812, log out. Then the
 * rounds page (quality chart over rounds with the gate decisions, a running round's progress live), a
 * release (lineage, key id, download with the session) and quarantined labels accepted and dropped. The
 * chart's history and its refused round are rows written into the registry as the round runner writes them;
 * then a real round (a tiny random teacher, 600 MNIST rows and the devices' hard examples, 2 epochs, in the
 * round worker) is started from the API and followed live to its gate decision. The quarantine marks two
 * of the devices' own examples as the label review does.
 */
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { eq, inArray } from 'drizzle-orm';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { examples, models, releases, rounds } from '../../../cloud/registry/schema.js';
import { denseModel } from '../../fixtures/onnx-models.js';
import { FaultWorld, MODEL, type ReleaseInfo } from '../fault-harness.js';
import { waitFor } from '../../helpers/broker.js';
import { SCREENSHOTS, chromiumMissing, horizontalOverflow, launch, seriousA11yViolations } from './browser.js';

const TOKEN = 'fault-admin-token-0123456789';
const LONG_ID = `plant-7-line-3-${'x'.repeat(49)}`; // 64 characters: the longest device id
const DEVICES = ['pi-a', 'pi-b', LONG_ID];
const missing = chromiumMissing();
if (missing) console.warn(`[skip] console browser tests: ${missing}`);

describe.skipIf(!!missing)('fleet console in chromium', () => {
  let w: FaultWorld;
  let browser: Browser;
  let ctx: BrowserContext;
  let page: Page;
  let base: string;
  let r2: ReleaseInfo;
  let r1seq: number;
  let rolloutId: string;
  const api = async <T,>(path: string): Promise<T> => (await (await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as T;

  beforeAll(async () => {
    w = await FaultWorld.create();
    base = w.cloud!.apiUrl;
    const r1 = w.addRelease({ seed: 1 });
    r1seq = r1.seq;
    for (const id of DEVICES) await w.startDevice(id);
    await w.rollout(r1.seq, { soakSeconds: 0 });
    await w.waitConverged(r1.seq);
    for (const id of DEVICES) expect(await w.predict(id, 4)).toBe(4);
    await w.waitNoExampleLost();
    r2 = w.addRelease({ seed: 2 });
    browser = await launch();
    ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    page = await ctx.newPage();
    page.on('dialog', (d) => void d.accept());
  }, 90_000);
  afterAll(async () => {
    await browser?.close();
    await w?.dispose();
  });

  /** Screenshot at both sizes; checks axe and horizontal scrolling at each. */
  async function audit(name: string): Promise<void> {
    for (const [label, vp] of [['desktop', { width: 1280, height: 800 }], ['phone', { width: 375, height: 812 }]] as const) {
      await page.setViewportSize(vp);
      await page.waitForTimeout(50);
      const over = await horizontalOverflow(page);
      expect(over.px, `${name} @${label}: horizontal scroll (${over.culprits.join(', ')})`).toBe(0);
      await page.screenshot({ path: join(SCREENSHOTS, `${name}-${label}.png`), fullPage: true });
    }
    await page.setViewportSize({ width: 1280, height: 800 });
    expect(await seriousA11yViolations(page), `${name}: axe serious/critical`).toEqual([]);
  }

  it('refuses every page without a session (the login form instead)', async () => {
    // Every route's refusal is checked over HTTP in test/unit/ui/console-http.test.ts; here, the browser's view of it.
    for (const p of ['/ui/', `/ui/devices/${LONG_ID}`, '/ui/audit']) {
      await page.goto(`${base}${p}`);
      expect(new URL(page.url()).pathname, p).toBe('/ui/login');
      expect(await page.locator('input[name=token]').count()).toBe(1);
    }
    const probe = await fetch(`${base}/ui/devices`, { headers: { 'hx-request': 'true' } });
    expect(probe.status).toBe(401);
    await audit('login');
  });

  it('logs in with the admin token; the overview tiles equal the API', async () => {
    await page.goto(`${base}/ui/login`);
    await page.getByLabel('Admin token').fill('not-the-token-at-all');
    await page.getByRole('button', { name: 'Log in' }).click();
    await expect.poll(() => page.getByRole('alert').textContent()).toContain('Wrong admin token');
    await page.getByLabel('Admin token').fill(TOKEN);
    await page.getByLabel('Your name (for the audit log)').fill('ada');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.waitForURL(`${base}/ui/`);
    const { devices } = await api<{ devices: { status: string }[] }>('/v1/devices');
    const tile = async (id: string) => Number(await page.locator(`#${id}`).getAttribute('data-count'));
    expect(await tile('tile-total')).toBe(devices.filter((d) => d.status !== 'revoked').length);
    expect(await tile('tile-online')).toBe(devices.filter((d) => d.status === 'online').length);
    expect(await tile('tile-offline')).toBe(devices.filter((d) => d.status === 'offline').length);
    expect(await tile('tile-total')).toBe(3);
    expect(await page.locator('figure:not(#agent-versions) .legend').textContent()).toContain('3');
    // The agent-version distribution (issue 14) counts the same devices.
    expect(await page.locator('#agent-versions .legend').textContent()).toMatch(/: 3\b/);
    await audit('overview');
  });

  it('filters the device list, opens a device and its telemetry chart draws', async () => {
    await page.click('#tile-online');
    await page.waitForURL(/state=online/);
    expect(Number(await page.locator('#device-total').getAttribute('data-total'))).toBe(3);
    await page.getByLabel('Search id or group').fill('plant-7');
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.waitForURL(/q=plant-7/);
    expect(Number(await page.locator('#device-total').getAttribute('data-total'))).toBe(1);
    await audit('devices');
    // Telemetry every second: wait until the history has a bucket, then open the page.
    await waitFor(async () => (await (await page.request.get(`${base}/ui/devices/${LONG_ID}`)).text()).includes('chart-latency'), 20_000, { intervalMs: 500, message: 'telemetry history for the device' });
    await page.getByRole('link', { name: LONG_ID }).click();
    await page.waitForURL(new RegExp(`/ui/devices/${LONG_ID}$`));
    await page.waitForSelector('#chart-latency[data-drawn="1"] canvas');
    await page.waitForSelector('#chart-requests[data-drawn="1"] canvas');
    expect(await page.locator('#running').textContent()).toContain('release');
    expect(await page.locator('#events tbody tr').count()).toBeGreaterThan(0);
    await audit('device');
  });

  it('shows a rollout progress live (SSE), pauses and resumes it from the buttons', async () => {
    // Long soak: wave 1 (the canary) installs, then the rollout waits — time to pause it.
    rolloutId = await w.rollout(r2.seq, { canaryShare: 0.34, soakSeconds: 2 });
    await page.goto(`${base}/ui/rollouts/${rolloutId}`);
    await page.evaluate('window.marker = 42');
    const live = page.locator('#rollout-live > div');
    await expect.poll(async () => Number(await live.getAttribute('data-installed')), { timeout: 20_000 }).toBeGreaterThanOrEqual(1);
    await page.locator('button[data-action=pause]').click();
    await expect.poll(() => live.getAttribute('data-paused'), { timeout: 10_000 }).toBe('true');
    expect((await api<{ paused: boolean }>(`/v1/rollouts/${rolloutId}`)).paused).toBe(true);
    await audit('rollout-paused');
    await page.locator('button[data-action=resume]').click();
    await expect.poll(() => live.getAttribute('data-paused'), { timeout: 10_000 }).toBe('false');
    await expect.poll(() => live.getAttribute('data-state'), { timeout: 30_000 }).toBe('completed');
    expect(Number(await live.getAttribute('data-installed'))).toBe(3);
    // All of it arrived over the open page: no reload happened.
    expect(await page.evaluate('window.marker')).toBe(42);
    expect((await api<{ state: string }>(`/v1/rollouts/${rolloutId}`)).state).toBe('completed');
    await audit('rollout');
    await page.goto(`${base}/ui/rollouts`);
    await audit('rollouts');
    await page.goto(`${base}/ui/audit`);
    const log = await page.locator('#audit').textContent();
    for (const a of ['session.login', 'rollout.pause', 'rollout.resume']) expect(log).toContain(a);
    expect(log).toContain('ada');
    await audit('audit');
  });

  it('refuses a forged or missing CSRF token from the signed-in page', async () => {
    const statuses = await page.evaluate(async (id) => {
      const post = (h: Record<string, string>) => fetch(`/ui/rollouts/${id}/rollback`, { method: 'POST', headers: h }).then((r) => r.status);
      return [await post({ 'x-csrf-token': 'forged-token' }), await post({})];
    }, rolloutId);
    expect(statuses).toEqual([403, 403]);
    expect((await api<{ state: string }>(`/v1/rollouts/${rolloutId}`)).state).toBe('completed');
  });

  it('shows hard examples with thumbnails drawn from the stored tensors', async () => {
    await page.goto(`${base}/ui/examples`);
    const imgs = page.locator('.thumbs img');
    expect(await imgs.count()).toBe(12);
    await expect.poll(() => page.evaluate(`[...document.querySelectorAll('.thumbs img')].filter((e) => e.complete && e.naturalWidth === 96).length`)).toBe(12);
    await page.getByLabel('Device').fill('pi-a');
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.waitForURL(/device=pi-a/);
    expect(await page.locator('.thumbs img').count()).toBe(4);
    await audit('examples');
  });

  it('shows the keys page', async () => {
    await page.goto(`${base}/ui/keys`);
    const { keys } = await api<{ keys: { keyId: string; status: string }[] }>('/v1/keys');
    expect(await page.locator('#signing-key').textContent()).toBe(keys.find((k) => k.status === 'active')!.keyId);
    await audit('keys');
  });

  it('shows the rounds: quality over rounds with gate decisions, and a running round live (SSE)', async () => {
    const db = w.registry.db;
    const t = (minAgo: number) => new Date(Date.now() - minAgo * 60_000).toISOString();
    const m = (acc: number, pass: boolean) => ({ holdoutAccuracy: acc, teacherHoldoutAccuracy: 0.97, holdoutAgreement: acc + 0.02, hardAgreement: acc - 0.05, gate: { pass, reason: pass ? `holdout accuracy ${acc} passed` : `holdout accuracy ${acc} < parent − tolerance` } });
    db.insert(rounds).values({ id: 'e2e-round-1', model: MODEL, state: 'released', trigger: 'manual', metrics: m(0.91, true), releaseSeq: r2.seq, startedAt: t(30), finishedAt: t(29), createdAt: t(30) }).run();
    db.insert(rounds).values({ id: 'e2e-round-2', model: MODEL, state: 'rejected', trigger: 'schedule', metrics: m(0.84, false), error: 'holdout accuracy 0.84 < parent − tolerance', startedAt: t(20), finishedAt: t(19), createdAt: t(20) }).run();
    db.insert(rounds).values({ id: 'e2e-round-3', model: MODEL, state: 'running', trigger: 'schedule', progress: { phase: 'teacher', detail: 'soft labels', at: t(1) }, startedAt: t(1), createdAt: t(1) }).run();
    await page.goto(`${base}/ui/rounds`);
    await page.waitForSelector(`#chart-rounds-${MODEL}[data-drawn="1"] canvas`);
    expect(await page.locator(`#chart-rounds-${MODEL}`).getAttribute('data-rounds')).toBe('2');
    expect(await page.locator('tr[data-round=e2e-round-2]').textContent()).toContain('refused');
    await audit('rounds');
    await page.getByRole('link', { name: 'e2e-round-3' }).click();
    await page.waitForURL(/\/ui\/rounds\/e2e-round-3$/);
    await page.evaluate('window.marker = 7');
    const live = page.locator('#round-live > div');
    expect(await live.getAttribute('data-phase')).toBe('teacher');
    db.update(rounds).set({ progress: { phase: 'train', epoch: 4, epochs: 10, loss: 0.31, at: new Date().toISOString() } }).where(eq(rounds.id, 'e2e-round-3')).run();
    await expect.poll(() => live.getAttribute('data-phase'), { timeout: 10_000 }).toBe('train');
    expect(await page.getByRole('progressbar').getAttribute('aria-valuenow')).toBe('4');
    await audit('round');
    db.update(rounds).set({ state: 'rejected', metrics: m(0.8, false), finishedAt: new Date().toISOString() }).where(eq(rounds.id, 'e2e-round-3')).run();
    await expect.poll(() => live.getAttribute('data-state'), { timeout: 10_000 }).toBe('rejected');
    expect(await page.locator('#round-gate').textContent()).toContain('refused');
    expect(await page.evaluate('window.marker')).toBe(7); // live, no reload
  });

  it('shows a release: lineage, signing key, and downloads the artifact only with a session', async () => {
    w.registry.db.update(releases).set({ parentSeq: r1seq, roundId: 'e2e-round-1' }).where(eq(releases.seq, r2.seq)).run();
    await page.goto(`${base}/ui/releases`);
    await audit('releases');
    await page.locator(`tr[data-release="${r2.seq}"] a`).first().click();
    await page.waitForURL(new RegExp(`/ui/releases/${r2.seq}$`));
    expect(await page.locator('#lineage').textContent()).toContain(`release ${r1seq}`);
    const rel = await api<{ keyId: string }>(`/v1/releases/${r2.seq}`);
    expect(await page.locator('#key-id').textContent()).toBe(rel.keyId);
    await audit('release');
    const dl = await page.request.get(`${base}/ui/releases/${r2.seq}/artifact`);
    expect(dl.status()).toBe(200);
    expect(createHash('sha256').update(await dl.body()).digest('hex')).toBe(r2.sha256);
    expect((await fetch(`${base}/ui/releases/${r2.seq}/artifact`)).status).toBe(401);
  });

  it('accepts and drops quarantined feedback labels in the hard-example browser (audited)', async () => {
    const [a, b] = w.storedIds();
    w.registry.db.update(examples).set({ label: 3, labelState: 'quarantined' }).where(inArray(examples.id, [a!, b!])).run();
    await page.goto(`${base}/ui/examples`);
    expect(await page.locator('#quarantine figure').count()).toBe(2);
    await audit('quarantine');
    await page.locator(`figure[data-quarantined="${a}"] button[data-action=accept]`).click();
    await page.waitForSelector(`figure[data-quarantined="${a}"][data-outcome=accepted]`);
    await page.locator(`figure[data-quarantined="${b}"] button[data-action=drop]`).click();
    await page.waitForSelector(`figure[data-quarantined="${b}"][data-outcome=dropped]`);
    expect((await api<{ examples: unknown[] }>('/v1/examples/quarantine')).examples).toEqual([]);
    expect(w.registry.db.select({ s: examples.labelState }).from(examples).where(eq(examples.id, a!)).get()?.s).toBe('accepted');
    await page.goto(`${base}/ui/audit`);
    const log = await page.locator('#audit').textContent();
    for (const x of ['label.accept', 'label.drop', a!, b!]) expect(log).toContain(x);
  });

  it('follows a real round started from the API live to its gate decision, and the chart counts it', async () => {
    // The harness's model gets a real (tiny, random) teacher and small distillation settings; any accuracy passes the gate.
    const teacherFile = join(w.dir, 'console-teacher.onnx');
    writeFileSync(teacherFile, denseModel({ sizes: [784, 32, 10], seed: 3 }).bytes);
    w.registry.db
      .update(models)
      .set({ teacher: { files: [teacherFile], outputKind: 'logits' }, distillSettings: { baseData: 'mnist:train', baseLimit: 600, holdout: 'mnist:test', holdoutLimit: 100, epochs: 2, batchSize: 64, hardExampleShare: 0.5, tolerance: 1 } })
      .where(eq(models.name, MODEL))
      .run();
    await page.goto(`${base}/ui/rounds`);
    await page.waitForSelector(`#chart-rounds-${MODEL}[data-drawn="1"] canvas`);
    const scoredBefore = Number(await page.locator(`#chart-rounds-${MODEL}`).getAttribute('data-rounds'));
    const started = await fetch(`${base}/v1/models/${MODEL}/rounds`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: '{}' });
    expect(started.status).toBe(202);
    const { id } = (await started.json()) as { id: string };
    await page.goto(`${base}/ui/rounds/${id}`);
    await page.evaluate('window.marker = 11');
    const live = page.locator('#round-live > div');
    const phases = new Set<string>();
    await expect
      .poll(
        async () => {
          const phase = await live.getAttribute('data-phase');
          if (phase) phases.add(phase);
          return live.getAttribute('data-state');
        },
        { timeout: 100_000, interval: 250 },
      )
      .toMatch(/^(released|rejected|failed)$/);
    const row = await api<{ state: string; error?: string | null }>(`/v1/rounds/${id}`);
    expect(row.state, row.error ?? '').toBe('released');
    expect(await live.getAttribute('data-state')).toBe('released');
    expect(await page.locator('#round-gate').textContent()).toContain('passed');
    expect(phases.size, `phases seen live: ${[...phases].join(', ')}`).toBeGreaterThan(0);
    expect(await page.evaluate('window.marker')).toBe(11); // followed live, no reload
    await page.goto(`${base}/ui/rounds`);
    await page.waitForSelector(`#chart-rounds-${MODEL}[data-drawn="1"] canvas`);
    expect(Number(await page.locator(`#chart-rounds-${MODEL}`).getAttribute('data-rounds'))).toBe(scoredBefore + 1);
    expect(await page.locator(`tr[data-round="${id}"]`).textContent()).toContain('passed');
  }, 120_000);

  it('logs out: the console is closed again', async () => {
    await page.getByRole('button', { name: 'Log out' }).click();
    await page.waitForURL(`${base}/ui/login`);
    await page.goto(`${base}/ui/`);
    expect(new URL(page.url()).pathname).toBe('/ui/login');
  });
});
