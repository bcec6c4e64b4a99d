/**
 * Issue 10 item 4: the signed assignment `{deviceId, model, cohort}` beside the manifest. The device
 * refuses a desired whose assignment names another device or model (`assignment_mismatch`, a security
 * pause for the rollout), or whose assignment is not signed by a trusted key; the cloud's publisher
 * attaches it only for devices that declared `desired.assignment`.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ReleasePublisher } from '../../../cloud/fleet/publisher.js';
import { eventEffect } from '../../../cloud/rollouts/policy.js';
import { checkAssignment } from '../../../edge/updates/assignment.js';
import { UpdateManager } from '../../../edge/updates/index.js';
import { generateSigningKey, signAssignment, signManifest, toTrustedKey, verifyAssignment } from '../../../shared/manifest/index.js';
import { DEVICE_CAPABILITIES, deviceCompat, signedManifestSchema } from '../../../shared/protocol/index.js';
import { makeManifest, modelBytes, tempDir } from './fixtures.js';
import { ArtifactServer, EventLog, FakeHost } from './harness.js';

const key = generateSigningKey();
const stranger = generateSigningKey();
const trusted = [toTrustedKey(key)];

describe('checkAssignment', () => {
  const m = makeManifest(modelBytes(100), { model: 'digits' });
  const signed = (deviceId: string, model: string, k = key) => signAssignment({ deviceId, model, cohort: null }, k.privateKeyPem);

  it('accepts its own assignment, and a desired with none', () => {
    expect(checkAssignment({ assignment: signed('pi-1', 'digits') }, m, 'pi-1', trusted)).toBeUndefined();
    expect(checkAssignment({}, m, 'pi-1', trusted)).toBeUndefined();
    expect(checkAssignment({}, m, 'pi-1', trusted, true)).toMatchObject({ reason: 'assignment_mismatch' });
    expect(checkAssignment({ assignment: signed('pi-1', 'digits') }, m, 'pi-1', trusted, true)).toBeUndefined();
  });
  it('refuses another device or model, an untrusted or forged signature, and malformed input', () => {
    expect(checkAssignment({ assignment: signed('pi-2', 'digits') }, m, 'pi-1', trusted)).toMatchObject({ reason: 'assignment_mismatch', detail: expect.stringContaining('"pi-2"') });
    expect(checkAssignment({ assignment: signed('pi-1', 'faces') }, m, 'pi-1', trusted)).toMatchObject({ reason: 'assignment_mismatch', detail: expect.stringContaining('"faces"') });
    expect(checkAssignment({ assignment: signed('pi-1', 'digits', stranger) }, m, 'pi-1', trusted)).toMatchObject({ reason: 'unknown_key' });
    const forged = signed('pi-2', 'digits');
    forged.assignment = { ...forged.assignment, deviceId: 'pi-1' };
    expect(checkAssignment({ assignment: forged }, m, 'pi-1', trusted)).toMatchObject({ reason: 'bad_signature' });
    const bad: unknown[] = [null, 'x', {}, { assignment: { deviceId: 'pi-1' } }, { assignment: {}, signature: { alg: 'rsa', keyId: key.keyId, sig: 'AA==' } }];
    for (const b of bad) expect(checkAssignment({ assignment: b }, m, 'pi-1', trusted)?.reason, JSON.stringify(b)).toBe('malformed_manifest');
    const extra = signAssignment({ deviceId: 'pi-1', model: 'digits', cohort: null }, key.privateKeyPem);
    expect(verifyAssignment({ ...extra, assignment: { ...extra.assignment, extra: 1 } }, trusted).ok).toBe(false);
  });
  it('the rollout policy pauses on it as a security event', () => {
    expect(eventEffect({ type: 'rejected', reason: 'assignment_mismatch' })).toBe('security');
  });
});

describe('UpdateManager with an assignment', () => {
  const server = new ArtifactServer();
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeAll(() => server.start());
  afterAll(() => server.stop());
  beforeEach(async () => ({ dir, cleanup } = await tempDir()));
  afterEach(async () => cleanup());

  it('installs with its own assignment and refuses one for another model', async () => {
    const log = new EventLog();
    const m = await UpdateManager.create({ deviceId: 'pi-1', dataDir: dir, trustedKeys: trusted, host: new FakeHost(), emit: log.emit, retry: false, httpIdleTimeoutMs: 2000 });
    try {
      const bytes = modelBytes(4500);
      const url = server.serve(`a-${Date.now()}`, bytes);
      const s = signManifest(makeManifest(bytes, { release: 1, model: 'digits' }, { url }), key);
      const wrong = { ...s, assignment: signAssignment({ deviceId: 'pi-1', model: 'faces', cohort: null }, key.privateKeyPem) };
      expect(await m.handleDesired(Buffer.from(JSON.stringify(wrong)))).toMatchObject({ status: 'rejected', reason: 'assignment_mismatch' });
      const right = { ...s, assignment: signAssignment({ deviceId: 'pi-1', model: 'digits', cohort: null }, key.privateKeyPem) };
      const ok = await m.handleDesired(Buffer.from(JSON.stringify(right)));
      expect(ok, JSON.stringify(ok)).toMatchObject({ status: 'installed', release: 1 });
    } finally {
      await m.dispose();
    }
  });

  it('requireAssignment (edge.json): a desired without an assignment is refused; without the flag it installs', async () => {
    const bytes = modelBytes(4600);
    const url = server.serve(`r-${Date.now()}`, bytes);
    const bare = Buffer.from(JSON.stringify(signManifest(makeManifest(bytes, { release: 1, model: 'digits' }, { url }), key)));
    const strict = await UpdateManager.create({ deviceId: 'pi-1', dataDir: dir, trustedKeys: trusted, host: new FakeHost(), emit: new EventLog().emit, retry: false, httpIdleTimeoutMs: 2000, requireAssignment: true });
    try {
      expect(await strict.handleDesired(bare)).toMatchObject({ status: 'rejected', reason: 'assignment_mismatch', detail: expect.stringContaining('requireAssignment') });
    } finally {
      await strict.dispose();
    }
    const lenient = await UpdateManager.create({ deviceId: 'pi-1', dataDir: dir, trustedKeys: trusted, host: new FakeHost(), emit: new EventLog().emit, retry: false, httpIdleTimeoutMs: 2000 });
    try {
      expect(await lenient.handleDesired(bare)).toMatchObject({ status: 'installed', release: 1 });
    } finally {
      await lenient.dispose();
    }
  });
});

describe('ReleasePublisher attaches the signed assignment', () => {
  it('only for devices that declared desired.assignment', async () => {
    const sent = new Map<string, Buffer>();
    const caps: Record<string, string[]> = { new: [DEVICE_CAPABILITIES.assignment], old: [] };
    const p = new ReleasePublisher({
      mqtt: { publish: async (topic: string, payload: Buffer) => void sent.set(topic, payload) } as never,
      compatOf: async (id) => deviceCompat({ protocolVersion: 2, capabilities: caps[id] ?? [] }),
      assign: (deviceId, model) => signAssignment({ deviceId, model, cohort: null }, key.privateKeyPem),
    });
    const s = signManifest(makeManifest(modelBytes(100), { release: 3, model: 'digits' }), key);
    await p.publishDesired('new', s);
    await p.publishDesired('old', s);
    const payloadOf = (id: string) => signedManifestSchema.parse(JSON.parse([...sent].find(([t]) => t.includes(`/${id}/desired`))![1].toString()));
    const got = payloadOf('new');
    expect(got.assignment).toBeDefined();
    expect(verifyAssignment(got.assignment, trusted)).toMatchObject({ ok: true, assignment: { deviceId: 'new', model: 'digits', cohort: null } });
    expect(payloadOf('old').assignment).toBeUndefined();
  });
});
