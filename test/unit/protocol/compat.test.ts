/** The compatibility policy (shared/protocol/compat.ts): what a device of a given protocol gets, both ways. */
import { describe, expect, it } from 'vitest';
import { generateSigningKey, signManifest } from '../../../shared/manifest/index.js';
import {
  CLOUD_FEATURES,
  cloudAccepts,
  cloudInfo,
  cloudInfoSchema,
  cloudMaySend,
  DEVICE_CAPABILITIES,
  deviceCompat,
  desiredFor,
  inputSpecSchema,
  MANIFEST_REQUIREMENTS,
  PROTOCOL_REVISION,
  signedManifestSchema,
  type SignedManifest,
} from '../../../shared/protocol/index.js';
import { makeManifest, modelBytes } from '../updates/fixtures.js';

const key = generateSigningKey();
const plain = signManifest(makeManifest(modelBytes(2000)), key);
const ranged = signManifest(makeManifest(modelBytes(2000), { input: { ...plain.manifest.input, range: [0, 255] } }), key);
const assignment = { assignment: { deviceId: 'pi-1', model: plain.manifest.model, cohort: null }, signature: plain.signature };
const withAssignment: SignedManifest = { ...plain, assignment };

const old = deviceCompat(null);
const noCaps = deviceCompat({ protocolVersion: 2, capabilities: [] });
const everything = deviceCompat({ protocolVersion: PROTOCOL_REVISION, capabilities: Object.values(DEVICE_CAPABILITIES) });

describe('desiredFor', () => {
  it('gives a protocol-1 device (no capabilities in its status) exactly today\'s payload', () => {
    expect(old).toEqual({ protocolVersion: 1, capabilities: new Set() });
    expect(deviceCompat({ protocolVersion: null, capabilities: null })).toEqual(old);
    const r = desiredFor(plain, old);
    expect(r).toEqual({ compatible: true, desired: plain, stripped: [] });
    // ...and what it gets parses under protocol 1's envelope (no `assignment` key).
    expect(Object.keys(r.compatible ? r.desired : {}).sort()).toEqual(['manifest', 'signature']);
  });

  it('strips envelope fields a device did not declare, keeps them for one that did', () => {
    const r = desiredFor(withAssignment, old);
    expect(r).toMatchObject({ compatible: true, stripped: ['assignment'] });
    expect(r.compatible && 'assignment' in r.desired).toBe(false);
    // The input object is left alone: the same signed release goes to many devices.
    expect(withAssignment.assignment).toBe(assignment);
    const full = desiredFor(withAssignment, everything);
    expect(full).toEqual({ compatible: true, desired: withAssignment, stripped: [] });
    expect(() => signedManifestSchema.parse(withAssignment)).not.toThrow();
  });

  it('refuses to send a release whose signed manifest needs a capability the device lacks', () => {
    expect(desiredFor(ranged, old)).toEqual({ compatible: false, missing: [DEVICE_CAPABILITIES.inputRange] });
    expect(desiredFor(ranged, noCaps)).toEqual({ compatible: false, missing: [DEVICE_CAPABILITIES.inputRange] });
    expect(desiredFor(ranged, deviceCompat({ protocolVersion: 2, capabilities: [DEVICE_CAPABILITIES.inputRange] }))).toMatchObject({ compatible: true, stripped: [] });
  });

  it('knows every optional field of the input spec that protocol 1 lacked', () => {
    // Protocol 1's input spec had exactly these keys; any other must have a MANIFEST_REQUIREMENTS row.
    const protocol1 = new Set(['shape', 'dtype', 'scaling', 'raw']);
    const newer = Object.keys(inputSpecSchema.shape).filter((k) => !protocol1.has(k));
    expect(newer.map((k) => `input.${k}`).sort()).toEqual(MANIFEST_REQUIREMENTS.map((r) => r.path).filter((p) => p.startsWith('input.')).sort());
  });
});

describe('message kinds and the cloud info', () => {
  it('sends receipts and the key set only to devices that declared them', () => {
    expect(cloudMaySend(old, 'receipts')).toBe(false);
    expect(cloudMaySend(old, 'keyset')).toBe(false);
    expect(cloudMaySend(deviceCompat({ protocolVersion: 2, capabilities: ['receipts'] }), 'receipts')).toBe(true);
    expect(cloudMaySend(deviceCompat({ protocolVersion: 2, capabilities: ['receipts'] }), 'keyset')).toBe(false);
    expect(cloudMaySend(everything, 'keyset')).toBe(true);
  });

  it('a device sends new fields only when the cloud info accepts them', () => {
    expect(cloudAccepts(undefined, CLOUD_FEATURES.statusExt)).toBe(false);
    expect(cloudAccepts({ accepts: [] }, CLOUD_FEATURES.statusExt)).toBe(false);
    const info = cloudInfo(new Date('2026-01-01T00:00:00Z'), 'apprentice-cloud/test');
    expect(cloudInfoSchema.parse(info)).toEqual(info);
    expect(info).toMatchObject({ protocolVersion: PROTOCOL_REVISION, accepts: Object.values(CLOUD_FEATURES) });
    expect(cloudAccepts(info, CLOUD_FEATURES.statusExt)).toBe(true);
  });
});
