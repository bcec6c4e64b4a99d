/**
 * Shadow evaluation in the console (issue 13 item 6), in a real chromium: the round page lists the
 * candidate's figures per cohort and per device (worst first), the rollout page shows each device's
 * figures — or "no evidence" — and the reason a device is held back. The console runs on the real API
 * over a real registry; the figures are rows as the round writes them, the held-back row as the agreement
 * gate writes it (its reason from the same verdict). No serious axe issue, no horizontal scroll on a phone.
 */
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { eq } from 'drizzle-orm';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { releases, rolloutDevices, rollouts, rounds } from '../../../cloud/registry/schema.js';
import { shadowIndex, shadowVerdict } from '../../../cloud/shadow/gate.js';
import { recordShadowEval, shadowEvalOfRound } from '../../../cloud/shadow/store.js';
import { harness, seedDevice, seedModel, seedRelease, TOKEN, type Harness } from '../../unit/cloud-api/helpers.js';
import { SCREENSHOTS, chromiumMissing, horizontalOverflow, launch, seriousA11yViolations } from './browser.js';

const missing = chromiumMissing();
if (missing) console.warn(`[skip] shadow console browser test: ${missing}`);

describe.skipIf(!!missing)('shadow figures in the console (chromium)', () => {
  let h: Harness;
  let server: ReturnType<typeof serve>;
  let base: string;
  let browser: Browser;
  let page: Page;

  beforeAll(async () => {
    h = harness({ console: { liveIntervalMs: 100 } });
    seedModel(h);
    seedRelease(h, { seq: 1, bytes: Buffer.from('one') });
    seedRelease(h, { seq: 2, bytes: Buffer.from('two') });
    const db = h.registry.db;
    for (const id of ['pi-1', 'pi-2', 'pi-3']) seedDevice(h, id, { runningSeq: id === 'pi-1' ? 1 : 2 });
    db.insert(rounds).values({ id: 'round-2', model: 'digits', state: 'released', trigger: 'manual', releaseSeq: 2, metrics: { holdoutAccuracy: 0.9, shadow: { devices: 2 } }, startedAt: '2026-11-01T00:00:00.000Z', finishedAt: '2026-11-01T00:01:00.000Z' }).run();
    db.update(releases).set({ roundId: 'round-2' }).where(eq(releases.seq, 2)).run();
    await recordShadowEval(h.registry, 'round-2', 'digits', [
      { scope: 'cohort', deviceId: null, cohort: null, samples: 120, judgedBy: null, runningSeq: null, candidateAccuracy: 100 / 120, runningAccuracy: 1, agreement: 100 / 120, delta: -20 / 120, deltaLow: -0.2336, deltaHigh: -0.0997 },
      { scope: 'device', deviceId: 'pi-1', cohort: null, samples: 60, judgedBy: 'device', runningSeq: 1, candidateAccuracy: 40 / 60, runningAccuracy: 1, agreement: 40 / 60, delta: -1 / 3, deltaLow: -0.4526, deltaHigh: -0.2141 },
      { scope: 'device', deviceId: 'pi-2', cohort: null, samples: 60, judgedBy: 'device', runningSeq: 1, candidateAccuracy: 1, runningAccuracy: 1, agreement: 1, delta: 0, deltaLow: 0, deltaHigh: 0 },
    ]);
    // The rollout as the engine leaves it: pi-1 held back by the gate's verdict, the others installed.
    const held = shadowVerdict(shadowIndex(await shadowEvalOfRound(h.registry, 'round-2')), 'pi-1', 0.01, 1);
    expect(held.hold).toBe(true);
    db.insert(rollouts).values({ id: 'ro-shadow', model: 'digits', releaseSeq: 2, target: { kind: 'all' }, canaryShare: 0.5, waves: [0.5, 1], soakSeconds: 0, failureThreshold: 0.2, state: 'completed', wave: 1 }).run();
    db.insert(rolloutDevices).values([
      { rolloutId: 'ro-shadow', deviceId: 'pi-1', canary: true, wave: 0, state: 'held_back', reason: held.reason },
      { rolloutId: 'ro-shadow', deviceId: 'pi-2', canary: true, wave: 0, state: 'installed' },
      { rolloutId: 'ro-shadow', deviceId: 'pi-3', canary: false, wave: 1, state: 'installed' },
    ]).run();

    server = serve({ fetch: h.app.fetch, port: 0, hostname: '127.0.0.1' });
    await new Promise((r) => server.once('listening', r));
    base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    browser = await launch();
    page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    await page.goto(`${base}/ui/login`);
    await page.getByLabel('Admin token').fill(TOKEN);
    await page.getByLabel('Your name (for the audit log)').fill('ada');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.waitForURL(`${base}/ui/`);
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await new Promise((r) => (server ? server.close(r) : r(undefined)));
    h?.close();
  });

  async function audit(name: string): Promise<void> {
    for (const [label, vp] of [['phone', { width: 375, height: 812 }], ['desktop', { width: 1280, height: 800 }]] as const) {
      await page.setViewportSize(vp);
      await page.waitForTimeout(50);
      const over = await horizontalOverflow(page);
      expect(over.px, `${name} @${label}: horizontal scroll (${over.culprits.join(', ')})`).toBe(0);
      await page.screenshot({ path: join(SCREENSHOTS, `${name}-${label}.png`), fullPage: true });
    }
    expect(await seriousA11yViolations(page), `${name}: axe serious/critical`).toEqual([]);
  }

  it('the round page lists the figures per cohort and per device, worst upper bound first', async () => {
    await page.goto(`${base}/ui/rounds/round-2`);
    const rows = page.locator('#shadow tbody tr');
    expect(await rows.evaluateAll((trs) => trs.map((t) => t.getAttribute('data-shadow')))).toEqual(['cohort:base', 'device:pi-1', 'device:pi-2']);
    const bad = (await page.locator('[data-shadow="device:pi-1"]').textContent())!;
    expect(bad).toContain('66.7%');
    expect(bad).toContain('−33.3 pts [−45.3, −21.4]');
    expect(await page.locator('[data-shadow="cohort:base"]').textContent()).toContain('−16.7 pts [−23.4, −10.0]');
    await audit('shadow-round');
  });

  it('the rollout page shows each device its figures or "no evidence", and why pi-1 is held back', async () => {
    await page.goto(`${base}/ui/rollouts/ro-shadow`);
    const cell = (id: string) => page.locator(`[data-shadow-device="${id}"]`);
    expect(await cell('pi-1').textContent()).toContain('−33.3 pts [−45.3, −21.4] on 60');
    expect(await cell('pi-2').textContent()).toContain('+0.0 pts [+0.0, +0.0] on 60');
    expect((await cell('pi-3').textContent())!.trim()).toBe('no evidence');
    expect(await cell('pi-3').locator('[data-evidence="none"]').getAttribute('title')).toMatch(/^no evidence: the round did not evaluate this device/);
    const heldRow = page.locator('tr', { has: cell('pi-1') });
    expect(await heldRow.textContent()).toContain('held back: upper bound −21.4 pts < −1.0');
    expect(await page.locator('.legend').first().textContent()).toContain('held back 1');
    await audit('shadow-rollout');
  });
});
