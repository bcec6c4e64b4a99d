/**
 * Shadow figures in the console, server-rendered (issue 13 items 4 and 6): the round page has one table
 * per release line; the rollout a shadow run's switch started shows the run (agreement, latency, samples,
 * switch decision and reason, each device's verdict and figures) beside each device's evidence and a
 * held-back device's reason; a shadow run has a page of its own. The real API over a real registry, the
 * rows as the round, the switch gate and the rollout engine write them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rolloutDevices, rollouts, rounds, releases } from '../../../cloud/registry/schema.js';
import { shadowIndex, shadowVerdict } from '../../../cloud/shadow/gate.js';
import { devicesOf, getRun, insertRun, recordShadowTelemetry, setRun } from '../../../cloud/shadow/run-store.js';
import { recordReleaseShadowEval, recordShadowEval, shadowEvalOfRelease } from '../../../cloud/shadow/store.js';
import type { ShadowViewLike } from '../../../cloud/api/types.js';
import type { SignedManifest } from '../../../shared/protocol/index.js';
import { harness, seedDevice, seedModel, seedRelease, TOKEN, type Harness } from '../cloud-api/helpers.js';
import { eq } from 'drizzle-orm';

const form = (fields: Record<string, string>) => ({ method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(fields).toString() });
const RUN = 'shadow-abc12345';
const AT = new Date('2026-11-01T00:00:00.000Z');

describe('shadow figures in the console', () => {
  let h: Harness;
  let cookie: string;
  const decision: ShadowViewLike['decision'] = {
    switch: true,
    reason: 'agreement ≥ 50% on 2 device(s) with ≥ 20 examples; teacher: 1 device(s) pass on their labelled disagreements; held back: pi-1',
    devices: [
      { deviceId: 'pi-1', verdict: 'fail', agreement: 0.8, detail: 'teacher: held back, upper bound < −1.0: −20.0 pts (95% CI −27.8 … −12.2) over 100 shadowed requests' },
      { deviceId: 'pi-2', verdict: 'pass', agreement: 0.9, detail: 'teacher: passed: −1.0 pts (95% CI −3.0 … +1.0) over 100 shadowed requests' },
    ],
  };

  beforeAll(async () => {
    const view = async (id: string): Promise<ShadowViewLike | undefined> => {
      const run = await getRun(h.registry, id);
      return run && { run, devices: await devicesOf(h.registry, id), decision };
    };
    h = harness({
      console: { liveIntervalMs: 50 },
      shadow: {
        create: async () => ({ id: RUN }),
        get: view,
        forRollout: async (rid) => (rid === 'ro-switch' ? view(RUN) : undefined),
        switch: async () => undefined,
        abort: async () => undefined,
      },
    });
    seedModel(h);
    for (const seq of [1, 2, 3]) seedRelease(h, { seq, bytes: Buffer.from(`release ${seq}`) });
    for (const id of ['pi-1', 'pi-2']) seedDevice(h, id, { runningSeq: 1 });
    const db = h.registry.db;
    // A round with two lines: the base candidate on every device, cohort lab's on its member.
    db.insert(rounds).values({ id: 'round-2', model: 'digits', state: 'released', trigger: 'manual', releaseSeq: 2, metrics: { holdoutAccuracy: 0.9 }, startedAt: AT.toISOString(), finishedAt: AT.toISOString() }).run();
    const row = (deviceId: string | null, delta: number) => ({ scope: deviceId ? ('device' as const) : ('cohort' as const), deviceId, cohort: null, samples: 60, judgedBy: deviceId ? ('device' as const) : null, runningSeq: deviceId ? 1 : null, candidateAccuracy: 1 + delta, runningAccuracy: 1, agreement: 1 + delta, delta, deltaLow: delta - 0.05, deltaHigh: delta + 0.05 });
    await recordShadowEval(h.registry, 'round-2', 'digits', [row(null, 0), row('pi-1', 0), row('pi-2', 0)], null);
    await recordShadowEval(h.registry, 'round-2', 'digits', [{ ...row(null, -0.2), cohort: 'lab' }, { ...row('pi-1', -0.2), cohort: 'lab' }], 'lab');

    // A shadow run of release 2, switched as release 3 with the switch gate's evidence; its rollout held pi-1 back.
    const signed = { manifest: { artifact: { sha256: 'x' } }, signature: {} } as unknown as SignedManifest;
    await insertRun(h.registry, { id: RUN, model: 'digits', releaseSeq: 2, shadowSeq: 9, signed, target: { kind: 'devices', ids: ['pi-1', 'pi-2'] }, policy: { waves: [1] }, until: '2026-11-01T00:30:00.000Z', autoSwitch: true, minAgreement: 0.5, minRequests: 20 }, ['pi-1', 'pi-2'], AT);
    for (const [d, agreements] of [['pi-1', 80], ['pi-2', 90]] as const) {
      await recordShadowTelemetry(h.registry, d, { model: 'digits', release: 9, sha256: 'x', until: '2026-11-01T00:30:00.000Z', state: 'running', requests: 100, agreements, skipped: 0, latencyMs: { p50: 0.4, p95: 0.9 } }, AT);
    }
    await recordReleaseShadowEval(h.registry, 3, `shadow:${RUN}`, 'digits', null, [
      { scope: 'device', deviceId: 'pi-1', cohort: null, samples: 100, judgedBy: 'device', runningSeq: 1, candidateAccuracy: null, runningAccuracy: null, agreement: 0.8, delta: -0.2, deltaLow: -0.2784, deltaHigh: -0.1216 },
      { scope: 'device', deviceId: 'pi-2', cohort: null, samples: 100, judgedBy: 'device', runningSeq: 1, candidateAccuracy: null, runningAccuracy: null, agreement: 0.9, delta: -0.01, deltaLow: -0.0295, deltaHigh: 0.0095 },
    ]);
    db.update(releases).set({ roundId: null }).where(eq(releases.seq, 3)).run();
    const held = shadowVerdict(shadowIndex(await shadowEvalOfRelease(h.registry, 3)), 'pi-1', 0.01, 1);
    expect(held.hold).toBe(true);
    db.insert(rollouts).values({ id: 'ro-switch', model: 'digits', releaseSeq: 3, target: { kind: 'devices', ids: ['pi-1', 'pi-2'] }, canaryShare: 1, waves: [1], soakSeconds: 0, failureThreshold: 0.2, state: 'completed', wave: 0 }).run();
    db.insert(rolloutDevices).values([
      { rolloutId: 'ro-switch', deviceId: 'pi-1', canary: true, wave: 0, state: 'held_back', reason: held.reason },
      { rolloutId: 'ro-switch', deviceId: 'pi-2', canary: true, wave: 0, state: 'installed' },
    ]).run();
    await setRun(h.registry, RUN, 'shadowing', { state: 'switched', reason: `window ended, gate passed: ${decision.reason}`, switchedSeq: 3, rolloutId: 'ro-switch' }, AT);

    const set = (await h.app.request('/ui/login', form({ token: TOKEN, who: 'grace' }))).headers.get('set-cookie')!;
    cookie = set.split(';')[0]!;
  });
  afterAll(() => h.close());

  const get = (path: string) => h.app.request(path, { headers: { accept: 'text/html', cookie } });

  it('the round page has one table per release line', async () => {
    const body = await (await get('/ui/rounds/round-2')).text();
    const base = body.indexOf('data-shadow-line="base"');
    const lab = body.indexOf('data-shadow-line="lab"');
    expect(base).toBeGreaterThan(0);
    expect(lab).toBeGreaterThan(base);
    expect(body).toContain('Cohort lab: its candidate on its members');
    // The lab line's member is 20 points worse on its own traffic there, not on the base line.
    expect(body.slice(lab)).toMatch(/data-shadow="device:pi-1"[\s\S]*?−20\.0 pts \[−25\.0, −15\.0\]/);
    expect(body.slice(base, lab)).toMatch(/data-shadow="device:pi-1"[\s\S]*?\+0\.0 pts/);
  });

  it("the switch rollout shows its shadow run: decision, reason, per-device samples, agreement, latency, verdict; and pi-1's held-back reason", async () => {
    const res = await get('/ui/rollouts/ro-switch');
    expect(res.status).toBe(200);
    const body = await res.text();
    expect(body).toContain(`data-shadow-run="${RUN}"`);
    expect(body).toMatch(/data-shadow-state="switched"><strong>switched<\/strong> — window ended, gate passed: agreement ≥ 50%.*held back: pi-1/);
    const dev = (id: string) => new RegExp(`<tr data-shadow-run-device="${id}"[^>]*>([\\s\\S]*?)</tr>`).exec(body)![0];
    expect(dev('pi-1')).toContain('data-verdict="fail"');
    expect(dev('pi-1')).toMatch(/<td>100<\/td><td>80\.0%<\/td><td class="hide-sm">0\.40 ms \/ 0\.90 ms<\/td><td class="error">held back<\/td>/);
    expect(dev('pi-1')).toContain('teacher: held back, upper bound &lt; −1.0: −20.0 pts (95% CI −27.8 … −12.2)');
    expect(dev('pi-2')).toMatch(/<td>90\.0%<\/td>[\s\S]*passes/);
    // Each device's evidence (the switch's figures for the re-issued release) and the held-back reason.
    expect(body).toMatch(/data-shadow-device="pi-1"><span[^>]*data-evidence="device"[^>]*>−20\.0 pts \[−27\.8, −12\.2\] on 100/);
    expect(body).toContain('held back: upper bound −12.2 pts &lt; −1.0: −20.0 pts (95% CI −27.8 … −12.2) vs running #1, agreement 80.0%, 100 requests shadowed on device pi-1');
  });

  it('a shadow run has a page of its own; an unknown one is a 404', async () => {
    const body = await (await get(`/ui/rollouts/${RUN}`)).text();
    expect(body).toContain('Shadow run of digits release 2');
    expect(body).toContain('data-shadow-gate="switch"');
    expect(body).toContain('href="/ui/rollouts/ro-switch"');
    expect((await get('/ui/rollouts/shadow-nope')).status).toBe(404);
  });
});
