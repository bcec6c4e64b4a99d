import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inArray } from 'drizzle-orm';
import { describe, expect, it } from 'vitest';
import { devices, releases } from '../../../cloud/registry/schema.js';
import { signManifest, verifyManifest } from '../../../shared/manifest/index.js';
import { REJECT_CLASSES, eventEffect, rollbackDue } from '../../../cloud/rollouts/policy.js';
import { REJECT_REASONS, topics } from '../../../shared/protocol/index.js';
import { MODEL, artifactBytes } from '../fleet/fixtures.js';
import { RolloutHarness, ids, onFakeTime } from './harness.js';

describe('failure classification', () => {
  it('classifies every REJECT_REASONS entry as the issue says (a new reason cannot go unclassified)', () => {
    const expected: Record<string, string> = {
      load_failed: 'failure', self_test_failed: 'failure', hash_mismatch: 'failure', length_mismatch: 'failure', input_mismatch: 'failure', denied_hash: 'failure',
      download_failed: 'retry', expired: 'retry',
      stale_release: 'ignored',
      bad_signature: 'security', malformed_manifest: 'security', sequence_jump: 'security', assignment_mismatch: 'security',
      unknown_key: 'key_set',
    };
    for (const reason of REJECT_REASONS) {
      expect(REJECT_CLASSES, reason).toHaveProperty(reason);
      expect(REJECT_CLASSES[reason], reason).toBe(expected[reason]);
    }
    expect(eventEffect({ type: 'rolled_back', reason: 'nan_output' })).toBe('failure');
    expect(eventEffect({ type: 'committed' })).toBe('installed');
  });

  it('unknown_key retries from a device still catching up after a key rotation and is a security pause from an up-to-date one', () => {
    const ev = { type: 'rejected' as const, reason: 'unknown_key' as const };
    expect(eventEffect(ev, { device: 3, current: 4 })).toBe('retry');
    expect(eventEffect(ev, { device: 4, current: 4 })).toBe('security');
    // Without the trust issue's key-set versions, a device is assumed to be catching up.
    expect(eventEffect(ev)).toBe('retry');
  });

  it('rolls back at max(minFailures, ceil(threshold × settled)) failures, and never on one device with the defaults', () => {
    const p = { minFailures: 2, failureThreshold: 0.2 };
    expect(rollbackDue({ installed: 0, failed: 1, quarantined: 0 }, p)).toBe(false);
    expect(rollbackDue({ installed: 8, failed: 1, quarantined: 1 }, p)).toBe(true); // 2 ≥ max(2, 2)
    expect(rollbackDue({ installed: 9, failed: 1, quarantined: 1 }, p)).toBe(false); // 2 < ceil(0.2 × 11) = 3
    expect(rollbackDue({ installed: 9, failed: 1, quarantined: 2 }, p)).toBe(true);
    expect(rollbackDue({ installed: 1000, failed: 0, quarantined: 0 }, p)).toBe(false);
  });
});

describe('failures in a rollout', () => {
  let h: RolloutHarness;
  onFakeTime(
    (x) => (h = x),
    (x) => ids(12).forEach((id) => x.fx.addDevice(id, { runningSeq: 1, desiredSeq: 1 })),
  );

  it('each failure kind below the threshold: counted and quarantined on the running release, re-issued above the release it refused', async () => {
    await h.boot();
    const r = await h.engine.create({ model: MODEL, releaseSeq: 2, waves: [1], minFailures: 100 });
    const kinds = ['load_failed', 'self_test_failed', 'hash_mismatch', 'length_mismatch', 'input_mismatch', 'denied_hash'] as const;
    for (const [i, reason] of kinds.entries()) await h.event(`d0${i + 1}`, 'rejected', 2, reason);
    await h.install('d07', 2);
    await h.event('d07', 'rolled_back', 2, 'nan_output');
    const v = (await h.view(r.id));
    expect(v.counts).toMatchObject({ quarantined: 7, failed: 0 });
    expect(v.rollout.quarantineSeqs).toEqual({ 1: 3 }); // one re-issue serves every quarantined device
    for (const [i, reason] of kinds.entries()) {
      const id = `d0${i + 1}`;
      expect(h.row(r.id, id)).toMatchObject({ state: 'quarantined', reason: `${reason}; kept on release 1 (re-issued as 3)` });
      expect(h.fake.desiredRelease(id)).toBe(3);
      expect(verifyManifest(h.fake.retained.get(topics.desired(id))!, h.fx.trusted)).toMatchObject({ ok: true, manifest: { release: 3, artifact: { sha256: h.shas[1] } } });
    }
    expect(h.log(r.id, 'd07')).toEqual(['waiting→desired', 'desired→installed', 'installed→failed', 'failed→quarantined']);
    expect(v.rollout.state).toBe('fleet');
  });

  it('download_failed and expired are retried until the device timeout, not counted; stale_release is ignored', async () => {
    await h.boot();
    const r = await h.engine.create({ model: MODEL, releaseSeq: 2, waves: [1], minFailures: 1, deviceTimeoutSeconds: 600 });
    await h.event('d01', 'rejected', 2, 'download_failed');
    await h.event('d02', 'rejected', 2, 'expired');
    await h.event('d03', 'rejected', 2, 'stale_release');
    expect(h.row(r.id, 'd01')).toMatchObject({ state: 'desired', reason: 'retrying: download_failed' });
    expect(h.row(r.id, 'd02')).toMatchObject({ state: 'desired', reason: 'retrying: expired' });
    expect(h.row(r.id, 'd03')).toMatchObject({ state: 'desired', reason: null });
    expect((await h.view(r.id)).rollout.state).toBe('fleet'); // minFailures 1, yet nothing rolled back
    await h.install('d01', 2);
    await h.advance(600);
    const v = (await h.view(r.id));
    expect(v.counts).toMatchObject({ installed: 1, timed_out: 11, failed: 0, quarantined: 0 });
    expect(v.rollout.state).toBe('completed');
  });

  it('bad_signature pauses the rollout with a security alert in its view and the log; nothing more is given out until resumed', async () => {
    await h.boot();
    const r = await h.engine.create({ model: MODEL, releaseSeq: 2, waves: [0.25, 1], soakSeconds: 0 });
    const [a, b, c] = (await h.wave(r.id, 0)) as [string, string, string];
    await h.install(a, 2);
    await h.install(b, 2);
    await h.event(c, 'rejected', null, 'bad_signature');
    const v = (await h.view(r.id));
    expect(v.rollout.securityAlert).toBe(`device ${c} refused release 2: bad_signature`);
    expect(v.rollout.pauseReason).toBe(`security alert: device ${c} refused release 2: bad_signature`);
    expect(v.transitions[0]!.reason).toMatch(/^security alert, paused/);
    await h.install(c, 2);
    await h.advance(60);
    expect((await h.view(r.id)).rollout).toMatchObject({ state: 'canary', wave: 0 });
    for (const id of (await h.wave(r.id, 1))) expect(h.fake.desiredRelease(id)).toBe(1);
    await h.engine.resume(r.id);
    expect((await h.view(r.id)).rollout.wave).toBe(1);
  });

  it('quarantine survives a cloud restart and a reconnect: the device is never told the bad release again', async () => {
    await h.boot();
    const r = await h.engine.create({ model: MODEL, releaseSeq: 2, waves: [1] });
    await h.event('d01', 'rejected', 2, 'self_test_failed');
    expect(h.row(r.id, 'd01').state).toBe('quarantined');
    await h.restart(30);
    expect(h.fake.desiredRelease('d01')).toBe(3);
    await h.online('d01', 1);
    await h.engine.onDeviceProvisioned('d01');
    expect(h.fake.desiredHistory('d01')).toEqual([3]);
    for (const id of ids(12).slice(1)) await h.install(id, 2);
    const v = (await h.view(r.id));
    expect(v.rollout.state).toBe('completed');
    expect(v.counts).toMatchObject({ installed: 11, quarantined: 1 });
    expect(h.fx.device('d01')!.desiredSeq).toBe(3);
  });

  it('failures past the threshold roll back the started waves only', async () => {
    await h.boot();
    const r = await h.engine.create({ model: MODEL, releaseSeq: 2, waves: [0.5, 1], soakSeconds: 60 });
    const w0 = (await h.wave(r.id, 0));
    const w1 = (await h.wave(r.id, 1));
    for (const id of w0.slice(0, 3)) await h.install(id, 2);
    await h.event(w0[3]!, 'rejected', 2, 'load_failed');
    expect((await h.view(r.id)).rollout.state).toBe('canary'); // 1 < minFailures 2: quarantined
    await h.event(w0[4]!, 'rejected', 2, 'load_failed'); // 2 ≥ max(2, ceil(0.2 × 5))
    const v = (await h.view(r.id));
    expect(v.rollout).toMatchObject({ state: 'rolled_back', rollbackSeq: 3 });
    expect(v.rollout.reason).toMatch(/^2 failed of 5 settled in waves 1..1/);
    for (const id of w0) expect(h.fake.desiredRelease(id)).toBe(3);
    for (const id of w1) expect(h.fake.desiredHistory(id)).not.toContain(2);
  });

  it('a release needing a capability a device did not declare: that device is incompatible and sent nothing, the others get it', async () => {
    const bytes = artifactBytes(5);
    const m = h.fx.manifest(5, bytes, { parent: 1, input: { shape: [4], dtype: 'float32', scaling: { scale: 1, offset: 0 }, raw: 'float32', range: [0, 1] } });
    const signed = signManifest(m, h.fx.key);
    const artifactPath = join('artifacts', `${m.artifact.sha256}.onnx`);
    writeFileSync(join(h.fx.dir, artifactPath), bytes);
    h.fx.db.insert(releases).values({ model: MODEL, seq: 5, sha256: m.artifact.sha256, bytes: bytes.byteLength, quantization: 'fp32', metrics: {}, manifest: signed.manifest, signature: signed.signature, parentSeq: 1, artifactPath }).run();
    h.fx.db.update(devices).set({ protocolVersion: 2, capabilities: ['manifest.input-range'] }).where(inArray(devices.id, ids(6))).run();
    await h.boot();
    const r = await h.engine.create({ model: MODEL, releaseSeq: 5, waves: [1] });
    const v = (await h.view(r.id));
    expect(v.counts).toMatchObject({ desired: 6, incompatible: 6 });
    for (const id of ids(12).slice(6)) {
      expect(h.row(r.id, id)).toMatchObject({ state: 'incompatible', reason: 'needs manifest.input-range' });
      expect(h.fake.desiredRelease(id)).toBe(1); // still what it had
      expect(h.fx.device(id)!.desiredSeq).toBe(1);
    }
    for (const id of ids(6)) await h.install(id, 5);
    expect((await h.view(r.id)).rollout).toMatchObject({ state: 'completed', reason: '6 installed, 6 incompatible' });
  });

  it('superseding: overlapping devices move to the newer rollout; the older keeps the rest and completes; disjoint targets are untouched', async () => {
    h.addRelease(4, 2);
    h.fx.addDevice('other-1', { groups: ['other'], runningSeq: 1, desiredSeq: 1 });
    await h.boot();
    const older = await h.engine.create({ model: MODEL, releaseSeq: 2, target: { kind: 'group', group: 'lab' }, waves: [1] });
    await h.install('d01', 2);
    const newer = await h.engine.create({ model: MODEL, releaseSeq: 4, target: { kind: 'devices', ids: ['d01', 'd02', 'd03'] }, waves: [1] });
    const disjoint = await h.engine.create({ model: MODEL, releaseSeq: 4, target: { kind: 'devices', ids: ['other-1'] }, waves: [1] });
    for (const id of ['d01', 'd02', 'd03']) expect(h.row(older.id, id)).toMatchObject({ state: 'superseded', supersededBy: newer.id });
    expect((await h.view(older.id)).rollout.state).toBe('fleet');
    expect((await h.view(newer.id)).counts).toMatchObject({ desired: 3, installed: 0 });
    expect((await h.view(newer.id)).counts.superseded).toBe(0); // the disjoint one took nothing from it
    for (const id of ids(12).slice(3)) await h.install(id, 2);
    expect((await h.view(older.id)).rollout.state).toBe('completed');
    expect((await h.view(older.id)).counts).toMatchObject({ installed: 9, superseded: 3 });
    for (const id of ['d01', 'd02', 'd03']) expect(h.fake.desiredRelease(id)).toBe(4);
    expect((await h.view(disjoint.id)).rollout.state).toBe('fleet');
  });
});
