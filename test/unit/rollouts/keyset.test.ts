import { describe, expect, it } from 'vitest';
import { currentKeySetVersion, setCurrentKeySetVersion } from '../../../cloud/rollouts/keyset.js';
import type { Status } from '../../../shared/protocol/index.js';
import { MODEL } from '../fleet/fixtures.js';
import { RolloutHarness, ids, onFakeTime } from './harness.js';

/** A status that reports the device's trusted key-set version (issue 10's `status.trust`). */
function statusWithTrust(deviceId: string, release: number, sha256: string, keysetVersion: number | null): Buffer {
  const s: Status = {
    v: 1, deviceId, state: 'online', model: MODEL, release, sha256, at: new Date().toISOString(),
    protocolVersion: 2, trust: { keysetVersion, state: keysetVersion === null ? 'trusted_keys' : 'current' },
  };
  return Buffer.from(JSON.stringify(s));
}

describe('unknown_key and key-set versions, through ingest', () => {
  let h: RolloutHarness;
  onFakeTime(
    (x) => (h = x),
    (x) => ids(6).forEach((id) => x.fx.addDevice(id, { runningSeq: 1, desiredSeq: 1 })),
  );

  it('stores the current key-set version and refuses a value that is not one', async () => {
    await h.boot();
    expect(await currentKeySetVersion(h.fx.registry)).toBeNull();
    await setCurrentKeySetVersion(h.fx.registry, 4);
    await setCurrentKeySetVersion(h.fx.registry, 5);
    expect(await currentKeySetVersion(h.fx.registry)).toBe(5);
    await expect(setCurrentKeySetVersion(h.fx.registry, -1)).rejects.toThrow(/non-negative integer/);
    await expect(setCurrentKeySetVersion(h.fx.registry, 1.5)).rejects.toThrow(/non-negative integer/);
  });

  it('from a device on an older key set (or none yet): retried, not counted, until the device timeout', async () => {
    await setCurrentKeySetVersion(h.fx.registry, 4);
    await h.boot();
    const r = await h.engine.create({ model: MODEL, releaseSeq: 2, waves: [1], minFailures: 1, deviceTimeoutSeconds: 600 });
    await h.feed('status', 'd01', statusWithTrust('d01', 1, h.shas[1]!, 3));
    await h.feed('status', 'd02', statusWithTrust('d02', 1, h.shas[1]!, null));
    await h.event('d01', 'rejected', 2, 'unknown_key');
    await h.event('d02', 'rejected', 2, 'unknown_key');
    for (const id of ['d01', 'd02']) expect(h.row(r.id, id)).toMatchObject({ state: 'desired', reason: 'retrying: unknown_key' });
    let v = (await h.view(r.id));
    expect(v.rollout).toMatchObject({ state: 'fleet', securityAlert: null, pausedAt: null });
    // d01 catches up (key set 4) and installs; the others never settle and time out.
    await h.feed('status', 'd01', statusWithTrust('d01', 1, h.shas[1]!, 4));
    await h.install('d01', 2);
    await h.advance(600);
    v = (await h.view(r.id));
    expect(v.counts).toMatchObject({ installed: 1, timed_out: 5, failed: 0, quarantined: 0 });
    expect(v.rollout.state).toBe('completed');
  });

  it('from a device on the current key set: a security pause with an alert', async () => {
    await setCurrentKeySetVersion(h.fx.registry, 4);
    await h.boot();
    const r = await h.engine.create({ model: MODEL, releaseSeq: 2, waves: [1], deviceTimeoutSeconds: 600 });
    await h.feed('status', 'd03', statusWithTrust('d03', 1, h.shas[1]!, 4));
    await h.event('d03', 'rejected', 2, 'unknown_key');
    const v = (await h.view(r.id));
    expect(v.rollout.securityAlert).toBe('device d03 refused release 2: unknown_key');
    expect(v.rollout.pauseReason).toBe('security alert: device d03 refused release 2: unknown_key');
    expect(h.row(r.id, 'd03')).toMatchObject({ state: 'desired', reason: 'unknown_key' });
    // Paused: device timeouts do not run.
    await h.advance(1200);
    expect((await h.view(r.id)).counts).toMatchObject({ timed_out: 0 });
  });

  it('without a published key set the cloud cannot tell, and takes it as catching up (retry)', async () => {
    await h.boot();
    const r = await h.engine.create({ model: MODEL, releaseSeq: 2, waves: [1] });
    await h.feed('status', 'd04', statusWithTrust('d04', 1, h.shas[1]!, 9));
    await h.event('d04', 'rejected', 2, 'unknown_key');
    expect(h.row(r.id, 'd04')).toMatchObject({ state: 'desired', reason: 'retrying: unknown_key' });
    expect((await h.view(r.id)).rollout.securityAlert).toBeNull();
  });
});
