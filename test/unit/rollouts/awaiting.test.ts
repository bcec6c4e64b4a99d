import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inArray } from 'drizzle-orm';
import { describe, expect, it } from 'vitest';
import { AWAITING_REASON } from '../../../cloud/rollouts/steps.js';
import { devices, releases } from '../../../cloud/registry/schema.js';
import { signManifest } from '../../../shared/manifest/index.js';
import { DEVICE_CAPABILITIES } from '../../../shared/protocol/index.js';
import { MODEL, artifactBytes, statusPayload } from '../fleet/fixtures.js';
import { onFakeTime, type RolloutHarness } from './harness.js';

const NEEDS = DEVICE_CAPABILITIES.lineageSource;

/** Release `seq` as an upload makes it: its manifest says `lineage.source: uploaded`, which needs NEEDS. */
function addUploaded(h: RolloutHarness, seq: number): void {
  const bytes = artifactBytes(seq);
  const m = h.fx.manifest(seq, bytes, { parent: 1, lineage: { exampleCount: 0, source: 'uploaded' } });
  const signed = signManifest(m, h.fx.key);
  const artifactPath = join('artifacts', `${m.artifact.sha256}.onnx`);
  writeFileSync(join(h.fx.dir, artifactPath), bytes);
  h.fx.db.insert(releases).values({ model: MODEL, seq, sha256: m.artifact.sha256, bytes: bytes.byteLength, quantization: 'fp32', metrics: {}, manifest: signed.manifest, signature: signed.signature, parentSeq: 1, artifactPath }).run();
  h.shas[seq] = m.artifact.sha256;
}

/** An online status as a protocol-2 daemon sends it, with its capabilities. */
function statusWith(id: string, seq: number | null, sha: string | null, capabilities: string[]): Buffer {
  const s = JSON.parse(statusPayload(id, seq, sha).toString()) as Record<string, unknown>;
  return Buffer.from(JSON.stringify({ ...s, protocolVersion: 2, capabilities }));
}

/**
 * Issue 8: a device that never reported a status has unknown capabilities. For a release that needs one
 * it waits like any offline device (and times out), instead of being `incompatible` at once; its first
 * status decides.
 */
describe('rollouts: devices whose capabilities are unknown', () => {
  let h: RolloutHarness;
  onFakeTime((x) => (h = x));

  it('a never-connected device times out; late ones are judged by their first status; one back after completion still installs', async () => {
    addUploaded(h, 5);
    for (const id of ['on-1', 'on-2']) h.fx.addDevice(id, { runningSeq: 1, desiredSeq: 1 });
    h.fx.db.update(devices).set({ protocolVersion: 2, capabilities: [NEEDS], lastSeen: new Date().toISOString() }).where(inArray(devices.id, ['on-1', 'on-2'])).run();
    const never = ['never', 'late', 'late-old', 'after'];
    for (const id of never) h.fx.addDevice(id, { online: false });
    await h.boot();

    const r = await h.engine.create({ model: MODEL, releaseSeq: 5, waves: [1], soakSeconds: 0, deviceTimeoutSeconds: 600 });
    for (const id of ['on-1', 'on-2']) expect(h.fake.desiredRelease(id)).toBe(5);
    for (const id of never) {
      expect(h.row(r.id, id)).toMatchObject({ state: 'desired', awaitingCapabilities: true, reason: AWAITING_REASON });
      expect(h.fake.desiredHistory(id)).toEqual([]); // nothing sent: what it understands is unknown
      expect(h.fx.device(id)!.desiredSeq).toBeNull();
    }
    expect((await h.view(r.id)).counts).toMatchObject({ desired: 6, incompatible: 0 });

    // Connects late with the capability: it gets the release and installs.
    await h.feed('status', 'late', statusWith('late', null, null, [NEEDS]));
    await h.engine.idle();
    expect(h.fake.desiredRelease('late')).toBe(5);
    expect(h.row(r.id, 'late')).toMatchObject({ state: 'desired', awaitingCapabilities: false });
    expect(h.fx.device('late')!.desiredSeq).toBe(5);
    // Connects late as a protocol-1 daemon (no capabilities): now known to lack it.
    await h.online('late-old', null);
    expect(h.row(r.id, 'late-old')).toMatchObject({ state: 'incompatible', reason: `needs ${NEEDS}`, awaitingCapabilities: false });
    expect(h.fake.desiredHistory('late-old')).toEqual([]);

    for (const id of ['on-1', 'on-2', 'late']) await h.install(id, 5);
    expect((await h.view(r.id)).rollout.state).toBe('fleet'); // never and after still wait
    await h.advance(600);
    const done = (await h.view(r.id));
    expect(done.rollout).toMatchObject({ state: 'completed', reason: '3 installed, 2 timed_out, 1 incompatible' });
    expect(h.row(r.id, 'never')).toMatchObject({ state: 'timed_out' });
    expect(h.log(r.id, 'late')).toEqual(['waiting→desired', 'desired→desired', 'desired→desired', 'desired→installed']);

    // Back after the rollout completed, with the capability: converges to the release; the install is recorded.
    await h.advance(3600);
    await h.feed('status', 'after', statusWith('after', null, null, [NEEDS]));
    await h.engine.idle();
    expect(h.fake.desiredRelease('after')).toBe(5);
    await h.feed('status', 'after', statusWith('after', 5, h.shas[5]!, [NEEDS]));
    await h.event('after', 'installed', 5);
    expect(h.row(r.id, 'after')).toMatchObject({ state: 'timed_out', installedAt: new Date().toISOString() });
    expect((await h.view(r.id)).rollout.state).toBe('completed');
  });

  it('a device that timed out waiting, back while the rollout is still active: sent the release, its install recorded', async () => {
    addUploaded(h, 5);
    h.fx.addDevice('on-1', { runningSeq: 1, desiredSeq: 1 });
    h.fx.db.update(devices).set({ protocolVersion: 2, capabilities: [NEEDS], lastSeen: new Date().toISOString() }).where(inArray(devices.id, ['on-1'])).run();
    h.fx.addDevice('off', { online: false });
    await h.boot();
    const r = await h.engine.create({ model: MODEL, releaseSeq: 5, waves: [1], soakSeconds: 0, deviceTimeoutSeconds: 60 });
    await h.install('on-1', 5);
    // A device provisioned 30 s later joins with its own deadline: the rollout stays active past off's.
    await h.advance(30);
    h.fx.addDevice('new-1', { runningSeq: 1, desiredSeq: 1 });
    h.fx.db.update(devices).set({ protocolVersion: 2, capabilities: [NEEDS], lastSeen: new Date().toISOString() }).where(inArray(devices.id, ['new-1'])).run();
    await h.engine.onDeviceProvisioned('new-1');
    await h.advance(31);
    expect(h.row(r.id, 'off')).toMatchObject({ state: 'timed_out', awaitingCapabilities: true });
    expect(h.row(r.id, 'new-1')).toMatchObject({ state: 'desired' });
    await h.feed('status', 'off', statusWith('off', null, null, [NEEDS]));
    await h.engine.idle();
    expect(h.fake.desiredRelease('off')).toBe(5);
    expect(h.row(r.id, 'off')).toMatchObject({ state: 'timed_out', awaitingCapabilities: false, reason: 'capabilities reported: release sent' });
    await h.install('off', 5);
    expect(h.row(r.id, 'off').installedAt).not.toBeNull();
  });
});
