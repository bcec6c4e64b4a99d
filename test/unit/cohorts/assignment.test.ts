/**
 * Issue 13 item 1: a device never receives another cohort's student. The manifest names its cohort
 * (`manifest.cohort`, absent on the base line), the signed assignment names the device's cohort, and the
 * device refuses any difference (`assignment_mismatch`). The cloud signs the cohort the registry says
 * the device is in (cohortOf), and sends a cohort manifest only to devices declaring `manifest.cohort`.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ReleasePublisher } from '../../../cloud/fleet/publisher.js';
import { cohortForGroups, cohortOf, cohortsNow } from '../../../cloud/rounds/cohorts.js';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { checkAssignment } from '../../../edge/updates/assignment.js';
import { UpdateManager } from '../../../edge/updates/index.js';
import { EDGE_CAPABILITIES } from '../../../edge/status/status.js';
import { generateSigningKey, signAssignment, signManifest, toTrustedKey, verifyAssignment } from '../../../shared/manifest/index.js';
import { DEVICE_CAPABILITIES, deviceCompat, desiredFor, manifestSchema, signedManifestSchema } from '../../../shared/protocol/index.js';
import { registryDialects } from '../../helpers/dialects.js';
import { insertModel } from '../rounds/helpers.js';
import { makeManifest, modelBytes, tempDir } from '../updates/fixtures.js';
import { ArtifactServer, EventLog, FakeHost } from '../updates/harness.js';

const dialects = registryDialects();
const key = generateSigningKey();
const trusted = [toTrustedKey(key)];
const assign = (deviceId: string, cohort: string | null, model = 'digits') => signAssignment({ deviceId, model, cohort }, key.privateKeyPem);

describe('checkAssignment with cohorts', () => {
  const base = makeManifest(modelBytes(100), { model: 'digits' });
  const rot = makeManifest(modelBytes(100), { model: 'digits', cohort: 'rot' });
  const noise = makeManifest(modelBytes(100), { model: 'digits', cohort: 'noise' });

  it('accepts only the line of its signed assignment', () => {
    expect(checkAssignment({ assignment: assign('pi-1', 'rot') }, rot, 'pi-1', trusted)).toBeUndefined();
    expect(checkAssignment({ assignment: assign('pi-1', null) }, base, 'pi-1', trusted)).toBeUndefined();
  });
  it("refuses another cohort's student, the base while in a cohort, and a cohort student while on the base line", () => {
    expect(checkAssignment({ assignment: assign('pi-1', 'rot') }, noise, 'pi-1', trusted)).toMatchObject({ reason: 'assignment_mismatch', detail: expect.stringContaining('cohort "noise"') });
    expect(checkAssignment({ assignment: assign('pi-1', 'rot') }, base, 'pi-1', trusted)).toMatchObject({ reason: 'assignment_mismatch', detail: expect.stringContaining('base line') });
    expect(checkAssignment({ assignment: assign('pi-1', null) }, rot, 'pi-1', trusted)).toMatchObject({ reason: 'assignment_mismatch', detail: expect.stringContaining('cohort "rot"') });
  });
  it('a forged cohort in a signed assignment fails its signature', () => {
    const a = assign('pi-1', 'rot');
    const forged = { ...a, assignment: { ...a.assignment, cohort: 'noise' } };
    expect(checkAssignment({ assignment: forged }, noise, 'pi-1', trusted)).toMatchObject({ reason: 'bad_signature' });
  });
  it('the manifest schema bounds the cohort name (malformed input)', () => {
    for (const bad of ['', 'x'.repeat(129), 7, null]) expect(manifestSchema.safeParse({ ...base, cohort: bad }).success, JSON.stringify(bad)).toBe(false);
    expect(manifestSchema.safeParse(rot).success).toBe(true);
  });
});

describe('compatibility: manifest.cohort', () => {
  const signed = signManifest(makeManifest(modelBytes(100), { model: 'digits', cohort: 'rot' }), key);
  it('a cohort release is incompatible with a device that does not declare manifest.cohort; this daemon declares it', () => {
    expect(desiredFor(signed, deviceCompat({ protocolVersion: 2, capabilities: [DEVICE_CAPABILITIES.assignment] }))).toEqual({ compatible: false, missing: ['manifest.cohort'] });
    expect(desiredFor(signed, deviceCompat({ protocolVersion: 2, capabilities: [...EDGE_CAPABILITIES] })).compatible).toBe(true);
    expect(EDGE_CAPABILITIES).toContain(DEVICE_CAPABILITIES.cohort);
    // A base-line manifest needs nothing new.
    expect(desiredFor(signManifest(makeManifest(modelBytes(100)), key), deviceCompat(null)).compatible).toBe(true);
  });
});

describe('UpdateManager (real) with cohort releases', () => {
  const server = new ArtifactServer();
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeAll(() => server.start());
  afterAll(() => server.stop());
  beforeEach(async () => ({ dir, cleanup } = await tempDir()));
  afterEach(async () => cleanup());

  it("a device of cohort rot refuses cohort noise's release and the base's, and installs its own", async () => {
    const log = new EventLog();
    const m = await UpdateManager.create({ deviceId: 'pi-1', dataDir: dir, trustedKeys: trusted, host: new FakeHost(), emit: log.emit, retry: false, httpIdleTimeoutMs: 2000 });
    try {
      const release = (seq: number, cohort: string | undefined, parent: number | null) => {
        const bytes = modelBytes(4000 + seq);
        const url = server.serve(`c-${seq}-${Date.now()}`, bytes);
        const s = signManifest(makeManifest(bytes, { release: seq, model: 'digits', parent, ...(cohort ? { cohort } : {}) }, { url }), key);
        return Buffer.from(JSON.stringify({ ...s, assignment: assign('pi-1', 'rot') }));
      };
      expect(await m.handleDesired(release(3, 'noise', 1))).toMatchObject({ status: 'rejected', reason: 'assignment_mismatch' });
      expect(await m.handleDesired(release(4, undefined, 1))).toMatchObject({ status: 'rejected', reason: 'assignment_mismatch' });
      const ok = await m.handleDesired(release(2, 'rot', 1));
      expect(ok, JSON.stringify(ok)).toMatchObject({ status: 'installed', release: 2 });
      expect(log.events.filter((e) => e.type === 'rejected').map((e) => e.reason)).toEqual(['assignment_mismatch', 'assignment_mismatch']);
    } finally {
      await m.dispose();
    }
  });
});

describe.each(dialects)('cohortOf and the assignment the cloud signs on $name', (d) => {
  let registry: StoreRegistry;
  beforeEach(async (ctx) => {
    registry = await d.open(ctx);
    const add = (id: string, groups: string[], revoked = false) => registry.q.insert(registry.t.devices).values({ id, groups, credentialHash: 'x', revoked });
    await add('r1', ['lab', 'rot']);
    await add('r2', ['rot']);
    await add('n1', ['noise', 'rot']);
    await add('b1', ['lab']);
    await add('gone', ['solo'], true);
  });
  afterEach(() => d.close());

  it('declared cohorts: the first declared cohort whose group the device is in; others on the base line', async () => {
    await insertModel(registry, { name: 'digits', distillSettings: { baseData: 'mnist:train', cohorts: [{ name: 'noisy', group: 'noise' }, { name: 'rotated', group: 'rot' }] } });
    expect(await cohortOf(registry, 'r1', 'digits')).toBe('rotated');
    expect(await cohortOf(registry, 'n1', 'digits')).toBe('noisy');
    expect(await cohortOf(registry, 'b1', 'digits')).toBeNull();
    expect(await cohortOf(registry, 'unknown', 'digits')).toBeNull();
    expect(await cohortOf(registry, 'r1', 'no-such-model')).toBeNull();
  });
  it('perGroup: a cohort per first group of a non-revoked device', async () => {
    await insertModel(registry, { name: 'digits', distillSettings: { baseData: 'mnist:train', perGroup: true } });
    expect(await cohortOf(registry, 'r1', 'digits')).toBe('lab');
    expect(await cohortOf(registry, 'n1', 'digits')).toBe('noise');
    expect(await cohortsNow(registry, { perGroup: true })).toEqual([
      { name: 'lab', group: 'lab' },
      { name: 'noise', group: 'noise' },
      { name: 'rot', group: 'rot' },
    ]);
    expect(cohortForGroups('not-an-array', { perGroup: true })).toBeNull();
  });
  it('the publisher signs the device cohort into the assignment beside the manifest', async () => {
    await insertModel(registry, { name: 'digits', distillSettings: { baseData: 'mnist:train', cohorts: [{ name: 'rotated', group: 'rot' }] } });
    const sent = new Map<string, Buffer>();
    const p = new ReleasePublisher({
      mqtt: { publish: async (topic: string, payload: Buffer) => void sent.set(topic, payload) } as never,
      compatOf: async () => deviceCompat({ protocolVersion: 2, capabilities: [...EDGE_CAPABILITIES] }),
      assign: async (deviceId, model) => signAssignment({ deviceId, model, cohort: await cohortOf(registry, deviceId, model) }, key.privateKeyPem),
    });
    await p.publishDesired('r2', signManifest(makeManifest(modelBytes(100), { release: 5, model: 'digits', cohort: 'rotated' }), key));
    const got = signedManifestSchema.parse(JSON.parse([...sent].find(([t]) => t.includes('/r2/desired'))![1].toString()));
    expect(verifyAssignment(got.assignment, trusted)).toMatchObject({ ok: true, assignment: { deviceId: 'r2', model: 'digits', cohort: 'rotated' } });
  });
});
