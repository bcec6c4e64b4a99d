import { describe, expect, it } from 'vitest';
import { MODEL, statusPayload, telemetryPayload } from '../fleet/fixtures.js';
import { RolloutHarness, ids, onFakeTime } from './harness.js';

/** Waves, device timeouts, canary replacement, pause/resume and restarts (issue 8), on fake time. */
describe('rollout lifecycle', () => {
  let h: RolloutHarness;
  onFakeTime((x) => (h = x));

  it('two devices switched off for the whole rollout: they time out, the rollout completes, and a late install is still recorded', async () => {
    for (const id of ids(8)) h.fx.addDevice(id, { runningSeq: 1, desiredSeq: 1 });
    for (const id of ['off-1', 'off-2']) h.fx.addDevice(id, { online: false, runningSeq: 1, desiredSeq: 1 });
    await h.boot();
    const r = await h.engine.create({ model: MODEL, releaseSeq: 2, waves: [0.2, 1], soakSeconds: 30, deviceTimeoutSeconds: 600 });
    // Online devices are picked for the first wave.
    expect((await h.wave(r.id, 0))).toHaveLength(2);
    for (const id of (await h.wave(r.id, 0))) expect(['off-1', 'off-2']).not.toContain(id);
    for (const id of (await h.wave(r.id, 0))) await h.install(id, 2);
    await h.advance(35);
    expect((await h.view(r.id)).rollout).toMatchObject({ state: 'fleet', wave: 1 });
    for (const id of ids(8)) await h.install(id, 2);
    // Every online device installed; the switched-off ones do not hold the rollout past their timeout.
    expect((await h.view(r.id)).rollout.state).toBe('fleet');
    await h.advance(600);
    const done = (await h.view(r.id));
    expect(done.rollout.state).toBe('completed');
    expect(done.counts).toMatchObject({ installed: 8, timed_out: 2, desired: 0, waiting: 0, failed: 0 });
    expect(done.rollout.reason).toBe('8 installed, 2 timed_out');
    // Their retained desired stays, so they still converge.
    expect(h.fake.desiredRelease('off-1')).toBe(2);
    expect(h.fx.device('off-1')!.desiredSeq).toBe(2);

    await h.advance(3600);
    await h.install('off-1', 2);
    expect(h.row(r.id, 'off-1')).toMatchObject({ state: 'timed_out', installedAt: new Date().toISOString() });
    expect(h.log(r.id, 'off-1')).toEqual(['waiting→desired', 'desired→timed_out', 'timed_out→timed_out']);
    expect((await h.view(r.id)).rollout.state).toBe('completed');
    expect((await h.view(r.id)).coverage).toMatchObject({ running: 9 });
  });

  it('waves: each wave gets the release only after the one before soaked healthy', async () => {
    for (const id of ids(10)) h.fx.addDevice(id, { runningSeq: 1, desiredSeq: 1 });
    await h.boot();
    const r = await h.engine.create({ model: MODEL, releaseSeq: 2, waves: [0.1, 0.5, 1], soakSeconds: 60 });
    const [w0, w1, w2] = [(await h.wave(r.id, 0)), (await h.wave(r.id, 1)), (await h.wave(r.id, 2))];
    expect([w0.length, w1.length, w2.length]).toEqual([1, 4, 5]);
    for (const id of [...w1, ...w2]) expect(h.fake.desiredRelease(id)).toBe(1);
    await h.install(w0[0]!, 2);
    await h.advance(30);
    expect((await h.view(r.id)).rollout.wave).toBe(0);
    await h.advance(35);
    expect((await h.view(r.id)).rollout).toMatchObject({ state: 'fleet', wave: 1 });
    for (const id of w1) expect(h.fake.desiredRelease(id)).toBe(2);
    for (const id of w2) expect(h.fake.desiredRelease(id)).toBe(1);
    for (const id of w1) await h.install(id, 2);
    // Degraded telemetry from a wave-2 device restarts that wave's soak.
    await h.advance(50);
    await h.feed('telemetry', w1[0]!, telemetryPayload(w1[0]!, 2, 'degraded'));
    await h.engine.idle();
    expect((await h.view(r.id)).rollout.canaryHealthySince).toBeNull();
    await h.advance(30);
    expect((await h.view(r.id)).rollout.wave).toBe(1);
    await h.feed('telemetry', w1[0]!, telemetryPayload(w1[0]!, 2, 'ok'));
    await h.advance(65);
    expect((await h.view(r.id)).rollout.wave).toBe(2);
    for (const id of w2) await h.install(id, 2);
    const v = (await h.view(r.id));
    expect(v.rollout.state).toBe('completed');
    expect(v.waves).toEqual([
      { share: 0.1, counts: { installed: 1 } },
      { share: 0.5, counts: { installed: 4 } },
      { share: 1, counts: { installed: 5 } },
    ]);
    expect(h.log(r.id, null)).toEqual(['null→pending', 'pending→canary', 'canary→fleet', 'fleet→fleet', 'fleet→completed']);
  });

  it('a canary offline past canaryGraceSeconds is replaced by a device of the next wave, and the rollout completes', async () => {
    for (const id of ids(6)) h.fx.addDevice(id, { runningSeq: 1, desiredSeq: 1 });
    await h.boot();
    const r = await h.engine.create({ model: MODEL, releaseSeq: 2, waves: [0.3, 1], soakSeconds: 10, canaryGraceSeconds: 120, deviceTimeoutSeconds: 3600 });
    const [gone, stays] = (await h.wave(r.id, 0)) as [string, string];
    await h.install(stays, 2);
    await h.feed('status', gone, statusPayload(gone, 1, h.shas[1], 'offline'));
    await h.advance(125);
    const v = (await h.view(r.id));
    expect(v.rollout.replacements).toBe(1);
    expect(h.row(r.id, gone)).toMatchObject({ wave: 1, canary: false, state: 'desired', reason: 'replaced: offline for more than 120 s' });
    const replacement = (await h.wave(r.id, 0)).find((d) => d !== stays)!;
    expect(h.row(r.id, replacement)).toMatchObject({ canary: true, state: 'desired' });
    expect(h.fake.desiredRelease(replacement)).toBe(2);
    expect(v.transitions.some((t) => t.reason?.includes(`${gone} offline, replaced by ${replacement}`))).toBe(true);
    await h.install(replacement, 2);
    await h.advance(15);
    expect((await h.view(r.id)).rollout.wave).toBe(1);
    for (const id of ids(6).filter((d) => d !== gone)) await h.install(id, 2);
    await h.advance(3600);
    expect((await h.view(r.id)).rollout.state).toBe('completed');
    expect((await h.view(r.id)).counts).toMatchObject({ installed: 5, timed_out: 1 });
  });

  it('after 3 offline canaries replaced in one wave, the wave pauses with a reason; resume continues', async () => {
    for (const id of ids(10)) h.fx.addDevice(id, { online: false, runningSeq: 1, desiredSeq: 1 });
    await h.boot();
    const r = await h.engine.create({ model: MODEL, releaseSeq: 2, waves: [0.1, 1], soakSeconds: 0, canaryGraceSeconds: 60 });
    for (let i = 0; i < 3; i++) await h.advance(65);
    const v = (await h.view(r.id));
    expect(v.rollout).toMatchObject({ state: 'canary', replacements: 3, pauseReason: 'wave 1 paused: 3 offline devices replaced' });
    expect(v.rollout.pausedAt).not.toBeNull();
    await h.advance(600);
    expect((await h.view(r.id)).rollout.replacements).toBe(3); // paused: no further replacement
    const canary = (await h.wave(r.id, 0))[0]!;
    await h.online(canary, 1);
    const resumed = await h.engine.resume(r.id);
    expect(resumed).toMatchObject({ pausedAt: null, replacements: 0 });
    await h.install(canary, 2);
    await h.advance(5);
    expect((await h.view(r.id)).rollout).toMatchObject({ state: 'fleet', wave: 1 });
  });

  it('pause stops waves and device timeouts; resume moves the deadlines by the paused time', async () => {
    for (const id of ids(4)) h.fx.addDevice(id, { runningSeq: 1, desiredSeq: 1 });
    h.fx.addDevice('off', { online: false, runningSeq: 1, desiredSeq: 1 });
    await h.boot();
    const r = await h.engine.create({ model: MODEL, releaseSeq: 2, waves: [0.2, 1], soakSeconds: 0, deviceTimeoutSeconds: 100 });
    await h.install((await h.wave(r.id, 0))[0]!, 2);
    expect((await h.view(r.id)).rollout.wave).toBe(1);
    await h.engine.pause(r.id, 'looking at dashboards');
    await expect(h.engine.pause(r.id)).rejects.toMatchObject({ code: 'conflict' });
    await h.advance(500);
    expect(h.row(r.id, 'off').state).toBe('desired'); // no timeout while paused
    for (const id of ids(4)) await h.install(id, 2);
    expect((await h.view(r.id)).counts.installed).toBe(4); // installs are still recorded
    expect((await h.view(r.id)).rollout.state).toBe('fleet');
    await h.engine.resume(r.id);
    await h.advance(80);
    expect(h.row(r.id, 'off').state).toBe('desired'); // 80 s of running time < 100 s
    await h.advance(30);
    expect(h.row(r.id, 'off').state).toBe('timed_out');
    expect((await h.view(r.id)).rollout.state).toBe('completed');
    await expect(h.engine.resume(r.id)).rejects.toMatchObject({ code: 'conflict' });
  });

  it('cloud restart while paused, in a later wave, and after completion: each state is kept and continues', async () => {
    for (const id of ids(5)) h.fx.addDevice(id, { runningSeq: 1, desiredSeq: 1 });
    h.fx.addDevice('off', { online: false, runningSeq: 1, desiredSeq: 1 });
    await h.boot();
    const r = await h.engine.create({ model: MODEL, releaseSeq: 2, waves: [0.2, 0.5, 1], soakSeconds: 10, deviceTimeoutSeconds: 300 });
    await h.engine.pause(r.id);
    await h.restart(1000);
    expect((await h.view(r.id)).rollout).toMatchObject({ state: 'canary', wave: 0 });
    expect((await h.view(r.id)).rollout.pausedAt).not.toBeNull();
    const w0 = (await h.wave(r.id, 0));
    expect(w0).toHaveLength(2);
    for (const c of w0) expect(h.fake.desiredRelease(c)).toBe(2); // retained desired republished from the registry
    await h.engine.resume(r.id);
    for (const c of w0) await h.install(c, 2);
    await h.advance(15);
    expect((await h.view(r.id)).rollout.wave).toBe(1);
    await h.restart(5);
    expect((await h.view(r.id)).rollout).toMatchObject({ state: 'fleet', wave: 1 });
    for (const id of (await h.wave(r.id, 1))) expect(h.fake.desiredRelease(id)).toBe(2);
    for (const id of ids(5)) await h.install(id, 2);
    await h.advance(15);
    await h.advance(300);
    expect((await h.view(r.id)).rollout.state).toBe('completed');
    await h.restart(10);
    expect((await h.view(r.id)).rollout.state).toBe('completed');
    expect((await h.view(r.id)).counts).toMatchObject({ installed: 5, timed_out: 1 });
    expect(h.fake.desiredRelease('off')).toBe(2);
  });
});
