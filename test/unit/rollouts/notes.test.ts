import { describe, expect, it } from 'vitest';
import { listDeviceEvents } from '../../../cloud/fleet/events-store.js';
import { MODEL } from '../fleet/fixtures.js';
import { ids, onFakeTime, type RolloutHarness } from './harness.js';

/**
 * Issue 8 with issue 12: the engine's own notes about a device (quarantined, timed out, superseded,
 * rolled back) go to the one store of device events, where the console's device page reads them.
 */
describe('rollout notes in device_events', () => {
  let h: RolloutHarness;
  onFakeTime(
    (x) => (h = x),
    (x) => ids(6).forEach((id) => x.fx.addDevice(id, { runningSeq: 1, desiredSeq: 1 })),
  );

  /** The engine's notes on a device, newest first. */
  async function notes(deviceId: string): Promise<{ type: string; release: number | null; reason: string | null; detail: string | null }[]> {
    const all = await listDeviceEvents(h.fx.registry, { deviceId, limit: 50 });
    return all.filter((e) => e.source === 'rollout').map((e) => ({ type: e.type, release: e.release, reason: e.reason, detail: e.detail }));
  }

  it('quarantined, timed out, superseded and rolled back each leave a note on the device, with the rollout and why', async () => {
    h.addRelease(4, 2);
    await h.boot();
    const r = await h.engine.create({ model: MODEL, releaseSeq: 2, waves: [1], deviceTimeoutSeconds: 600 });
    await h.event('d01', 'rejected', 2, 'self_test_failed');
    for (const id of ['d02', 'd03']) await h.install(id, 2);
    await h.advance(601);
    expect((await h.view(r.id)).rollout.state).toBe('completed');
    expect(await notes('d01')).toEqual([{ type: 'rollout.quarantined', release: 2, reason: expect.stringMatching(/^self_test_failed; kept on release 1/), detail: `rollout ${r.id}` }]);
    expect(await notes('d04')).toEqual([{ type: 'rollout.timed_out', release: 2, reason: 'not settled within 600 s', detail: `rollout ${r.id}` }]);
    expect(await notes('d02')).toEqual([]); // an install is the device's own event, not a note

    // A newer rollout while the older is still active takes its devices over: superseded in the older one.
    const older = await h.engine.create({ model: MODEL, releaseSeq: 4, target: { kind: 'devices', ids: ['d05', 'd06'] }, waves: [1] });
    const newer = await h.engine.create({ model: MODEL, releaseSeq: 4, target: { kind: 'devices', ids: ['d05'] }, waves: [1] });
    expect((await notes('d05'))[0]).toEqual({ type: 'rollout.superseded', release: 4, reason: `superseded by rollout ${newer.id}`, detail: `rollout ${older.id}` });

    await h.install('d05', 4);
    await h.engine.rollback(newer.id, 'bad accuracy');
    const rolledBack = (await h.view(newer.id)).rollout;
    expect(rolledBack.state).toBe('rolled_back');
    expect((await notes('d05'))[0]).toEqual({ type: 'rollout.rolled_back', release: rolledBack.rollbackSeq, reason: 'bad accuracy', detail: `rollout ${newer.id}` });
    expect(await notes('d06')).toEqual([{ type: 'rollout.timed_out', release: 2, reason: 'not settled within 600 s', detail: `rollout ${r.id}` }]);
  });
});
