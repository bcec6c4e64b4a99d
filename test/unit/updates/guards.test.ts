/**
 * Issue 10's device-side guards in the update pipeline, on the real state file, slots and HTTP fetch
 * (the model host is the recording FakeHost): crash-loop trial, sequence_jump, per-key floors, time floor.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { TimeFloor, UpdateManager, type UpdateManagerDeps } from '../../../edge/updates/index.js';
import { generateSigningKey, sha256Of, signManifest, toTrustedKey } from '../../../shared/manifest/index.js';
import type { Manifest } from '../../../shared/protocol/index.js';
import { makeManifest, modelBytes, tempDir } from './fixtures.js';
import { ArtifactServer, EventLog, FakeHost } from './harness.js';

const key = generateSigningKey();
const key2 = generateSigningKey();
const trustedKeys = [toTrustedKey(key), toTrustedKey(key2)];
const server = new ArtifactServer();
beforeAll(() => server.start());
afterAll(() => server.stop());

let dir: string;
let cleanup: () => Promise<void>;
let host: FakeHost;
let log: EventLog;
const managers: UpdateManager[] = [];
beforeEach(async () => {
  ({ dir, cleanup } = await tempDir());
  host = new FakeHost();
  log = new EventLog();
});
afterEach(async () => {
  await Promise.all(managers.splice(0).map((m) => m.dispose()));
  await cleanup();
});

async function manager(over: Partial<UpdateManagerDeps> = {}): Promise<UpdateManager> {
  const m = await UpdateManager.create({ deviceId: 'pi-1', dataDir: dir, trustedKeys, host, emit: log.emit, retry: false, httpIdleTimeoutMs: 2000, ...over });
  managers.push(m);
  return m;
}

function release(n: number, over: Partial<Manifest> = {}, signer = key) {
  const bytes = modelBytes(3000);
  const url = server.serve(`g${n}-${sha256Of(bytes).slice(0, 8)}`, bytes);
  const signed = signManifest(makeManifest(bytes, { release: n, ...over }, { url }), signer);
  return { signed, payload: Buffer.from(JSON.stringify(signed)), sha: signed.manifest.artifact.sha256 };
}

/** A restart: the old manager's state is on disk; a new one is created over it and restores. */
async function restart(): Promise<UpdateManager> {
  await managers.pop()!.dispose();
  host = new FakeHost();
  const m = await manager({ host });
  await m.restore();
  return m;
}

describe('crash-loop guard', () => {
  it('a switched release that crashes the daemon while serving is deny-listed at the second crashed start; the previous is served', async () => {
    const m = await manager();
    const [a, b] = [release(1), release(2)];
    await m.handleDesired(a.payload);
    expect(await m.commit(a.sha)).toBe(true);
    expect(await m.handleDesired(b.payload)).toMatchObject({ status: 'installed' });
    expect(m.persisted.trial).toMatchObject({ sha256: b.sha, release: 2, crashes: 0 });

    let again = await restart(); // crash 1: b is given one more chance
    expect(host.active).toBe(b.sha);
    expect(again.persisted.trial).toMatchObject({ sha256: b.sha, crashes: 1 });
    expect(log.of('rolled_back')).toHaveLength(0);

    again = await restart(); // crash 2
    expect(host.calls.map((c) => c.sha256)).toEqual([a.sha]);
    expect(again.persisted).toMatchObject({ current: { sha256: a.sha }, previous: null, trial: null });
    expect(again.persisted.denied).toContain(b.sha);
    expect(log.last()).toMatchObject({ type: 'rolled_back', reason: 'crash_loop', release: 2, sha256: b.sha, model: 'mnist-student' });
    expect(await again.handleDesired(b.payload)).toMatchObject({ status: 'rejected', reason: 'stale_release' }); // it was installed: floor 2
    expect(host.calls).toHaveLength(1);
  });

  it('a committed release is never blamed for a crash; a load failure (not a crash) ends the trial', async () => {
    const m = await manager();
    const [a, b] = [release(1), release(2)];
    await m.handleDesired(a.payload);
    await m.commit(a.sha);
    for (let i = 0; i < 3; i++) await restart();
    expect(log.of('rolled_back')).toHaveLength(0);
    expect(host.active).toBe(a.sha);
    host.failures.set(b.sha, 'load_failed');
    const cur = managers.at(-1)!;
    expect(await cur.handleDesired(b.payload)).toMatchObject({ status: 'rejected', reason: 'load_failed' });
    expect(cur.persisted.trial).toBeNull();
  });
});

describe('sequence bounds', () => {
  it('refuses a release more than maxSequenceJump above the floor with sequence_jump', async () => {
    const m = await manager({ maxSequenceJump: 1000 });
    await m.handleDesired(release(5).payload);
    expect(await m.handleDesired(release(1006).payload)).toMatchObject({ status: 'rejected', reason: 'sequence_jump' });
    expect(log.last()).toMatchObject({ type: 'rejected', reason: 'sequence_jump', release: 1006 });
    expect(m.persisted.highestRelease).toBe(5);
    expect(await m.handleDesired(release(1005).payload)).toMatchObject({ status: 'installed' });
  });

  it('the default bound is 1,000,000: 2^53−1 from a leaked key cannot raise the floor', async () => {
    const m = await manager();
    expect(await m.handleDesired(release(Number.MAX_SAFE_INTEGER).payload)).toMatchObject({ status: 'rejected', reason: 'sequence_jump' });
    expect(await m.handleDesired(release(1_000_000).payload)).toMatchObject({ status: 'installed' });
  });

  it('keeps the highest accepted release per signing key on disk', async () => {
    const m = await manager();
    await m.handleDesired(release(3).payload);
    await m.handleDesired(release(7, {}, key2).payload);
    await m.handleDesired(release(9).payload);
    const onDisk = JSON.parse(await readFile(join(dir, 'update-state.json'), 'utf8')) as { keyFloors: Record<string, number> };
    expect(onDisk.keyFloors).toEqual({ [toTrustedKey(key).keyId]: 9, [toTrustedKey(key2).keyId]: 7 });
  });
});

describe('time floor', () => {
  const day = 24 * 3600_000;
  it('a clock at 1970 does not make an expired manifest valid once a newer signed document was accepted', async () => {
    let clock = new Date(); // first boot: the clock is right
    const floor = await TimeFloor.open({ dataDir: dir, clock: () => clock });
    const m = await manager({ timeFloor: floor });
    const created = new Date(Date.now() - 1000).toISOString();
    await m.handleDesired(release(1, { createdAt: created }).payload);
    expect(JSON.parse(await readFile(join(dir, 'time-floor.json'), 'utf8'))).toEqual({ v: 1, floor: created });

    clock = new Date(0); // reboot without an RTC
    await managers.pop()!.dispose();
    const floor2 = await TimeFloor.open({ dataDir: dir, clock: () => clock });
    expect(floor2.clockBehind()).toBe(true);
    expect(floor2.now().toISOString()).toBe(created);
    const m2 = await manager({ timeFloor: floor2 });
    // Signed long ago and expired a day before the floor: valid at 1970, not at max(clock, floor).
    const old = release(2, { createdAt: new Date(Date.now() - 3 * day).toISOString(), expiresAt: new Date(Date.now() - day).toISOString() });
    expect(await m2.handleDesired(old.payload)).toMatchObject({ status: 'rejected', reason: 'expired' });
    expect(log.last()?.at).toBe(created); // events are stamped with max(clock, floor) too

    // The same manifest on a device with no floor and the same 1970 clock is accepted: the floor made the difference.
    const other = await tempDir();
    try {
      const fresh = await TimeFloor.open({ dataDir: other.dir, clock: () => clock });
      const m3 = await UpdateManager.create({ deviceId: 'pi-2', dataDir: other.dir, trustedKeys, host: new FakeHost(), emit: () => undefined, retry: false, timeFloor: fresh });
      expect(await m3.handleDesired(old.payload)).toMatchObject({ status: 'installed' });
      await m3.dispose();
    } finally {
      await other.cleanup();
    }
  });

  it('a corrupt floor file is logged and ignored, never lowers a later floor', async () => {
    await writeFile(join(dir, 'time-floor.json'), '{"v":1,');
    const f = await TimeFloor.open({ dataDir: dir, clock: () => new Date(0) });
    expect(f.floor).toBeNull();
    await f.observe('2026-11-30T00:00:00.000Z');
    await f.observe('2025-01-01T00:00:00.000Z');
    expect(f.now().toISOString()).toBe('2026-11-30T00:00:00.000Z');
  });
});

describe('revocation on the device', () => {
  const leaked = generateSigningKey();
  const good = key;
  let live: ReturnType<typeof toTrustedKey>[];
  beforeEach(() => {
    live = [toTrustedKey(good), toTrustedKey(leaked)];
  });
  const revokeLeaked = async (m: UpdateManager) => {
    live = [toTrustedKey(good)]; // the new key set: the leaked key is revoked
    await m.trustChanged([toTrustedKey(leaked).keyId]);
  };

  it('a leaked key signs a huge sequence, is revoked: the floor goes back to the highest live-key release, the device serves and accepts real releases again', async () => {
    const m = await manager({ trustedKeys: () => live });
    const r1 = release(1, {}, good);
    const r2 = release(2, {}, good);
    await m.handleDesired(r1.payload);
    await m.handleDesired(r2.payload);
    const evil = release(999_000, {}, leaked);
    expect(await m.handleDesired(evil.payload)).toMatchObject({ status: 'installed' });
    expect(await m.handleDesired(release(3, {}, good).payload)).toMatchObject({ status: 'rejected', reason: 'stale_release' }); // bricked

    await revokeLeaked(m);
    expect(m.persisted.highestRelease).toBe(2); // never 0: the highest from a live key
    expect(m.persisted.current?.sha256).toBe(r2.sha); // back on the newest release signed by a live key
    expect(host.active).toBe(r2.sha);
    expect(m.current).toMatchObject({ release: 2 });
    expect(m.degraded).toBeNull();
    expect(await m.handleDesired(evil.payload)).toMatchObject({ status: 'rejected', reason: 'unknown_key' }); // refused even though it was installed
    expect(await m.handleDesired(release(3, {}, good).payload)).toMatchObject({ status: 'installed' });
    // And across a restart the floor stays reset.
    const again = await restart();
    expect(again.persisted.highestRelease).toBe(3);
  });

  it('no slot signed by a live key: keeps serving, degraded, until a re-signed release arrives; restore keeps serving it too', async () => {
    const m = await manager({ trustedKeys: () => live });
    const evil = release(5, {}, leaked);
    await m.handleDesired(evil.payload);
    await revokeLeaked(m);
    expect(m.degraded).toBe('revoked_key');
    expect(host.active).toBe(evil.sha); // still serving, not nothing
    expect(m.persisted.highestRelease).toBe(5); // no live-key release to reset to: the floor stays

    await m.dispose();
    managers.pop();
    host = new FakeHost();
    const again = await manager({ host, trustedKeys: () => live, revokedKeys: () => [toTrustedKey(leaked).keyId] });
    expect(await again.restore()).toMatchObject({ status: 'restored', release: 5 });
    expect(again.degraded).toBe('revoked_key');
    expect(await again.handleDesired(release(6, {}, good).payload)).toMatchObject({ status: 'installed' });
    expect(again.degraded).toBeNull();
  });
});

describe('unknown key: wait for the key set', () => {
  it('a manifest from a key not yet trusted is verified again once the key set settled; installed if the new set has its key', async () => {
    const rotated = generateSigningKey();
    let live = [toTrustedKey(key)];
    let settle!: () => void;
    const m = await manager({ trustedKeys: () => live, keySetSettled: () => new Promise<void>((r) => (settle = r)) });
    const r = release(1, {}, rotated);
    const pending = m.handleDesired(r.payload);
    await new Promise((res) => setTimeout(res, 20));
    expect(log.events).toHaveLength(0); // not refused while the key set may still come
    live = [toTrustedKey(key), toTrustedKey(rotated)];
    settle();
    expect(await pending).toMatchObject({ status: 'installed' });

    const stranger = release(2, {}, generateSigningKey());
    const p2 = m.handleDesired(stranger.payload);
    settle();
    expect(await p2).toMatchObject({ status: 'rejected', reason: 'unknown_key' });
  });
});
