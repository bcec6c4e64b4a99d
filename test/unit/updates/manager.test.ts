import { readdir, readFile, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { UpdateManager, type UpdateManagerDeps } from '../../../edge/updates/index.js';
import { generateSigningKey, sha256Of, signManifest, toTrustedKey } from '../../../shared/manifest/index.js';
import type { Manifest } from '../../../shared/protocol/index.js';
import { makeManifest, modelBytes, tempDir } from './fixtures.js';
import { ArtifactServer, EventLog, FakeHost, waitFor, type ServeMode } from './harness.js';

const key = generateSigningKey();
const trustedKeys = [toTrustedKey(key)];
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

/** A release served over HTTP: returns the signed payload as MQTT would deliver it (bytes). */
function release(n: number, opts: { bytes?: Buffer; serve?: ServeMode; served?: Buffer; over?: Partial<Manifest> } = {}) {
  const bytes = opts.bytes ?? modelBytes(4500);
  const name = `r${n}-${sha256Of(bytes).slice(0, 8)}-${Math.random().toString(36).slice(2, 6)}`;
  const url = server.serve(name, opts.served ?? bytes, opts.serve);
  const signed = signManifest(makeManifest(bytes, { release: n, ...opts.over }, { url }), key);
  return { bytes, name, signed, payload: Buffer.from(JSON.stringify(signed)), sha: signed.manifest.artifact.sha256 };
}

const files = async (sub: string) => (await readdir(join(dir, sub)).catch(() => [] as string[])).sort();

describe('UpdateManager: install', () => {
  it('happy path: verifies, downloads, slots, activates, persists and reports installed', async () => {
    const m = await manager();
    const r = release(1);
    expect(await m.handleDesired(r.payload)).toEqual({ status: 'installed', release: 1, sha256: r.sha });
    expect(host.calls).toEqual([{ path: join(dir, 'models', `${r.sha}.onnx`), release: 1, sha256: r.sha, fileSha256: r.sha }]);
    expect(log.events).toEqual([expect.objectContaining({ v: 1, deviceId: 'pi-1', type: 'installed', model: 'mnist-student', release: 1, sha256: r.sha })]);
    expect(m.persisted.highestRelease).toBe(1);
    expect(m.persisted.current?.sha256).toBe(r.sha);
    expect(m.current).toEqual({ model: 'mnist-student', release: 1, sha256: r.sha });
    expect(await files('models')).toEqual([`${r.sha}.onnx`]);
    expect(await files('downloads')).toEqual([]);
  });

  it('keeps the previous slot and deletes older ones', async () => {
    const m = await manager();
    const [a, b, c] = [release(1), release(2), release(3)];
    for (const r of [a, b, c]) expect((await m.handleDesired(r.payload)).status).toBe('installed');
    expect(m.persisted.current?.sha256).toBe(c.sha);
    expect(m.persisted.previous?.sha256).toBe(b.sha);
    expect(await files('models')).toEqual([`${b.sha}.onnx`, `${c.sha}.onnx`].sort());
  });

  it('accepts the desired payload as text or parsed JSON too, and ignores a redelivery of what runs', async () => {
    const m = await manager();
    const r = release(1);
    expect((await m.handleDesired(JSON.parse(r.payload.toString()))).status).toBe('installed');
    expect(await m.handleDesired(r.payload.toString())).toMatchObject({ status: 'ignored' });
    expect(log.events).toHaveLength(1);
  });

  it('a duplicate delivery during the download is ignored, not downloaded twice', async () => {
    const m = await manager();
    const r = release(1);
    const [a, b] = [m.handleDesired(r.payload), m.handleDesired(r.payload)];
    expect(await b).toMatchObject({ status: 'ignored' });
    expect(await a).toMatchObject({ status: 'installed' });
    expect(server.requests.filter((q) => q.path === `/${r.name}`)).toHaveLength(1);
  });
});

describe('UpdateManager: refusals', () => {
  async function expectRefused(payload: unknown, reason: string, m?: UpdateManager, activations = 0) {
    const mgr = m ?? (await manager());
    const before = host.calls.length;
    expect(await mgr.handleDesired(payload)).toMatchObject({ status: 'rejected', reason });
    expect(log.last()).toMatchObject({ type: 'rejected', reason, deviceId: 'pi-1' });
    expect(host.calls.length).toBe(before + activations);
    return mgr;
  }

  it('bad signature: refused before anything touches disk or network', async () => {
    const r = release(1);
    const tampered = JSON.parse(r.payload.toString());
    tampered.manifest.metrics.accuracy = 1;
    await expectRefused(tampered, 'bad_signature');
    expect(log.last()).toMatchObject({ release: null, sha256: null, model: null });
    expect(server.requests.filter((q) => q.path === `/${r.name}`)).toHaveLength(0);
    expect(await files('models')).toEqual([]);
    expect(await files('downloads')).toEqual([]);
  });

  it('unknown key', async () => {
    const stranger = generateSigningKey();
    const signed = signManifest(makeManifest(modelBytes(2000)), stranger);
    await expectRefused(Buffer.from(JSON.stringify(signed)), 'unknown_key');
  });

  it.each([['garbage', Buffer.from('\u0000\u0001garbage')], ['JSON null', Buffer.from('null')], ['wrong shape', Buffer.from('{"manifest":1}')]])('malformed payload (%s)', async (_n, p) => {
    await expectRefused(p, 'malformed_manifest');
  });

  it('an empty payload (the retained desired state was cleared) is ignored, not reported', async () => {
    const m = await manager();
    expect(await m.handleDesired(Buffer.alloc(0))).toMatchObject({ status: 'ignored' });
    expect(log.events).toEqual([]);
  });

  it('stale release: at or below the highest accepted one', async () => {
    const m = await manager();
    await m.handleDesired(release(5).payload);
    await expectRefused(release(5).payload, 'stale_release', m); // same seq, other bytes
    await expectRefused(release(4).payload, 'stale_release', m);
  });

  it('a lower release replayed after a restart is still refused (floor kept on disk)', async () => {
    const first = await manager();
    const old = release(1);
    await first.handleDesired(old.payload);
    await first.handleDesired(release(2).payload);
    await first.dispose();
    const second = await manager();
    await expectRefused(old.payload, 'stale_release', second);
    expect(second.persisted.highestRelease).toBe(2);
  });

  it('expired manifest', async () => {
    const r = release(1, { over: { createdAt: new Date(Date.now() - 7200_000).toISOString(), expiresAt: new Date(Date.now() - 3600_000).toISOString() } });
    await expectRefused(r.payload, 'expired');
  });

  it('input spec mismatch, when the device pins its input', async () => {
    const m = await manager({ expectedInput: { shape: [28, 28, 1], dtype: 'float32' } });
    await expectRefused(release(1).payload, 'input_mismatch', m);
  });

  it('sha256 mismatch: the source serves other bytes', async () => {
    const r = release(1, { served: modelBytes(4500) });
    await expectRefused(r.payload, 'hash_mismatch');
    expect(await files('models')).toEqual([]);
  });

  it('length mismatch: the source sends more than the signed length', async () => {
    await expectRefused(release(1, { serve: { kind: 'extra', extra: 10, declare: 'none' } }).payload, 'length_mismatch');
    await expectRefused(release(2, { serve: { kind: 'extra', extra: 4096, declare: 'honest' } }).payload, 'length_mismatch');
  });

  it.each([['self_test_failed', 'self_test_failed'], ['load_failed', 'load_failed'], ['plain', 'load_failed']] as const)('host failure %s → %s; old model and state untouched', async (failure, reason) => {
    const m = await manager();
    const good = release(1);
    await m.handleDesired(good.payload);
    const bad = release(2);
    host.failures.set(bad.sha, failure);
    await expectRefused(bad.payload, reason, m, 1);
    expect(log.last()).toMatchObject({ release: 2, sha256: bad.sha });
    expect(m.persisted.highestRelease).toBe(1);
    expect(m.persisted.current?.sha256).toBe(good.sha);
    expect(m.current?.sha256).toBe(good.sha);
    expect(await files('models')).toEqual([`${good.sha}.onnx`]);
    // A redelivery of the failed manifest is not retried or reported again.
    const n = log.events.length;
    expect(await m.handleDesired(bad.payload)).toMatchObject({ status: 'ignored' });
    expect(log.events).toHaveLength(n);
  });
});

describe('UpdateManager: concurrency and retries', () => {
  it('a newer manifest supersedes a download in progress', async () => {
    const m = await manager();
    const slow = release(1, { serve: { kind: 'stall' } });
    const p1 = m.handleDesired(slow.payload);
    await waitFor(() => server.requests.some((q) => q.path === `/${slow.name}`), 5000, 'slow request');
    const fast = release(2);
    const p2 = m.handleDesired(fast.payload);
    expect(await p1).toEqual({ status: 'superseded', by: 2 });
    expect(await p2).toMatchObject({ status: 'installed', release: 2 });
    expect(host.calls.map((c) => c.release)).toEqual([2]);
    // The superseded one was not reported as a failure.
    expect(log.events.map((e) => e.type)).toEqual(['installed']);
    // An older manifest arriving while a newer one is in flight is stale.
    expect(await m.handleDesired(slow.payload)).toMatchObject({ status: 'rejected', reason: 'stale_release' });
  });

  it('download_failed is reported and retried with backoff', async () => {
    const m = await manager({ retry: { initialMs: 50, maxMs: 200 } });
    const r = release(1, { serve: { kind: 'status', status: 503, times: 2 } });
    expect(await m.handleDesired(r.payload)).toMatchObject({ status: 'rejected', reason: 'download_failed' });
    await waitFor(() => log.of('installed').length === 1, 5000, 'retried install');
    expect(log.of('rejected').map((e) => e.reason)).toEqual(['download_failed', 'download_failed']);
    expect(m.current?.release).toBe(1);
  });

  it('a retained desired redelivered on reconnect during the retry backoff of a failing download waits for the backoff', async () => {
    const m = await manager({ retry: { initialMs: 60_000, maxMs: 60_000 } });
    const r = release(1, { serve: { kind: 'status', status: 503, times: 5 } });
    expect(await m.handleDesired(r.payload)).toMatchObject({ status: 'rejected', reason: 'download_failed' });
    for (let i = 0; i < 3; i++) expect(await m.handleDesired(r.payload)).toEqual({ status: 'ignored', detail: 'release 1 is failing; its retry waits for the backoff' });
    expect(server.requests.filter((q) => q.path === `/${r.name}`)).toHaveLength(1);
    // Another release is not held by that backoff.
    expect(await m.handleDesired(release(2).payload)).toMatchObject({ status: 'installed', release: 2 });
  });

  it('HTTP resume: a broken transfer is resumed with a Range request on redelivery', async () => {
    const m = await manager();
    const r = release(1, { bytes: modelBytes(8000), serve: { kind: 'cut', bytes: 3000, times: 1 } });
    expect(await m.handleDesired(r.payload)).toMatchObject({ reason: 'download_failed' });
    expect(await m.handleDesired(r.payload)).toMatchObject({ status: 'installed' });
    expect(server.requests.filter((q) => q.path === `/${r.name}`).map((q) => q.range)).toEqual([undefined, 'bytes=2048-']);
  });
});

describe('UpdateManager: rollback and restore', () => {
  it('rollback: deny-lists the bad model, activates the previous slot, persists, reports', async () => {
    const m = await manager();
    const [a, b] = [release(1), release(2)];
    await m.handleDesired(a.payload);
    await m.handleDesired(b.payload);
    expect(await m.rollback('nan_output', b.sha)).toEqual({ status: 'rolled_back', to: { release: 1, sha256: a.sha } });
    expect(host.calls.at(-1)).toMatchObject({ sha256: a.sha, path: join(dir, 'models', `${a.sha}.onnx`) });
    expect(log.last()).toMatchObject({ type: 'rolled_back', reason: 'nan_output', release: 2, sha256: b.sha });
    expect(m.current?.release).toBe(1);
    expect(m.persisted).toMatchObject({ highestRelease: 2, denied: [b.sha], current: { sha256: a.sha }, previous: null });
    expect(await files('models')).toEqual([`${a.sha}.onnx`]);
    // The same bytes under a newer release are refused: deny-listed.
    expect(await m.handleDesired(release(3, { bytes: b.bytes }).payload)).toMatchObject({ status: 'rejected', reason: 'denied_hash' });
    // A restart keeps both the floor and the deny list.
    await m.dispose();
    const again = await manager();
    expect(await again.restore()).toMatchObject({ status: 'restored', from: 'current', release: 1 });
    expect(await again.handleDesired(release(4, { bytes: b.bytes }).payload)).toMatchObject({ reason: 'denied_hash' });
    expect((await again.handleDesired(release(5).payload)).status).toBe('installed');
  });

  it('rollback without a previous slot deny-lists and reports, and keeps serving', async () => {
    const m = await manager();
    const a = release(1);
    await m.handleDesired(a.payload);
    expect(await m.rollback('latency_budget', a.sha)).toMatchObject({ status: 'no_previous' });
    expect(log.last()).toMatchObject({ type: 'rolled_back', reason: 'latency_budget', sha256: a.sha });
    expect(m.persisted.denied).toEqual([a.sha]);
    expect(await m.rollback('latency_budget', 'f'.repeat(64))).toMatchObject({ status: 'not_current' });
  });

  it('restore activates the persisted current slot; a corrupt one falls back to the previous', async () => {
    const m = await manager();
    const [a, b] = [release(1), release(2)];
    await m.handleDesired(a.payload);
    await m.handleDesired(b.payload);
    expect(await m.commit(b.sha)).toBe(true); // through its health window: restarts are not crashes
    await m.dispose();

    host = new FakeHost();
    const again = await manager({ host });
    expect(await again.restore()).toEqual({ status: 'restored', from: 'current', release: 2, sha256: b.sha });
    expect(host.calls.map((c) => c.sha256)).toEqual([b.sha]);
    await again.dispose();

    await truncate(join(dir, 'models', `${b.sha}.onnx`), 100); // a torn slot
    host = new FakeHost();
    const third = await manager({ host });
    expect(await third.restore()).toMatchObject({ status: 'restored', from: 'previous', release: 1 });
    expect(host.calls.map((c) => c.sha256)).toEqual([a.sha]);
    expect(third.persisted).toMatchObject({ highestRelease: 2, current: { sha256: a.sha }, previous: null });
    expect(await files('models')).toEqual([`${a.sha}.onnx`]);
  });

  it('restore with nothing installed, and a corrupt state file fails loudly at create', async () => {
    expect(await (await manager()).restore()).toEqual({ status: 'none' });
    await (await import('node:fs/promises')).writeFile(join(dir, 'update-state.json'), '{"v":1,');
    await expect(manager()).rejects.toThrow(/corrupt update state/);
  });

  it('a slot from an untrusted key is not restored (key removed from the trust list)', async () => {
    const m = await manager();
    const a = release(1);
    await m.handleDesired(a.payload);
    await m.dispose();
    const other = generateSigningKey();
    const again = await manager({ trustedKeys: [toTrustedKey(other)] });
    expect(await again.restore()).toEqual({ status: 'none' });
    expect(JSON.parse(await readFile(join(dir, 'update-state.json'), 'utf8')).highestRelease).toBe(1);
  });
});
