/**
 * The protocol-2 payloads (issue 10 step 1): receipts, the key set, the cloud info and the new status
 * fields. Each parser of outside bytes gets valid input, every kind of wrong field, and garbage.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { generateSigningKey } from '../../../shared/manifest/index.js';
import {
  cloudInfoSchema,
  decodePayload,
  keySetSchema,
  MAX_EXAMPLES_PER_BATCH,
  PayloadError,
  receiptSchema,
  signedKeySetSchema,
  statusSchema,
} from '../../../shared/protocol/index.js';

const at = '2026-01-01T00:00:00.000Z';
const batchId = randomUUID();
const ids = [randomUUID(), randomUUID(), randomUUID()];
const sig = { alg: 'ed25519', keyId: 'ab'.repeat(8), sig: randomBytes(64).toString('base64') };

const receipt = {
  v: 1, deviceId: 'pi-1', at, batchId, kind: 'examples',
  stored: [ids[0]], refused: [{ id: ids[1], reason: 'oversized', detail: '300000 bytes' }], deferred: [{ id: ids[2], retryAfterSeconds: 60 }],
};
const batchReceipt = { v: 1, deviceId: 'pi-1', at, batchId, kind: 'batch', refused: { reason: 'malformed', detail: 'examples: expected array' } };

const root = generateSigningKey();
const rel = generateSigningKey();
const keyset = {
  v: 1, type: 'apprentice-keyset', version: 3, createdAt: at, expiresAt: '2027-01-01T00:00:00.000Z',
  root: { keyId: root.keyId, publicKeyPem: root.publicKeyPem },
  keys: [{ keyId: rel.keyId, publicKeyPem: rel.publicKeyPem, notBefore: at, notAfter: '2026-07-01T00:00:00.000Z' }],
  revoked: [{ keyId: 'cd'.repeat(8), revokedAt: at, reason: 'leaked' }],
};

const decode = <S extends Parameters<typeof decodePayload>[0]>(schema: S, v: unknown) => decodePayload(schema, JSON.stringify(v));

/** Payloads no parser may accept: empty, not JSON, not an object, huge. */
const garbage = ['', '{"v":1,', 'null', '42', '"text"', '[]', 'true', Buffer.from([0xff, 0xfe, 0x00]).toString('latin1')];

describe('receipts', () => {
  it('accepts the per-example and the batch form', () => {
    expect(decode(receiptSchema, receipt)).toEqual(receipt);
    expect(decode(receiptSchema, batchReceipt)).toEqual(batchReceipt);
    // A full batch of stored ids is the common case.
    const full = { ...receipt, stored: Array.from({ length: MAX_EXAMPLES_PER_BATCH }, () => randomUUID()), refused: [], deferred: [] };
    expect(decode(receiptSchema, full)).toMatchObject({ kind: 'examples' });
  });

  it.each([
    ['no example at all', { stored: [], refused: [], deferred: [] }],
    ['an id in two lists', { stored: [ids[0]], deferred: [{ id: ids[0], retryAfterSeconds: 5 }], refused: [] }],
    ['a repeated id', { stored: [ids[0], ids[0]], refused: [], deferred: [] }],
    ['more ids than a batch', { stored: Array.from({ length: MAX_EXAMPLES_PER_BATCH }, () => randomUUID()), deferred: [{ id: randomUUID(), retryAfterSeconds: 1 }], refused: [] }],
    ['an unknown refusal', { refused: [{ id: ids[1], reason: 'because' }] }],
    ['retry after 0 s', { deferred: [{ id: ids[2], retryAfterSeconds: 0 }] }],
    ['retry after more than a day', { deferred: [{ id: ids[2], retryAfterSeconds: 86_401 }] }],
    ['fractional retry', { deferred: [{ id: ids[2], retryAfterSeconds: 1.5 }] }],
    ['id not a uuid', { stored: ['row-1'] }],
    ['batch id not a uuid', { batchId: 'b-1' }],
    ['unknown kind', { kind: 'mixed' }],
    ['unknown key', { extra: 1 }],
    ['protocol v2 on the wire', { v: 2 }],
    ['bad device id', { deviceId: 'a/b' }],
    ['batch form fields in the example form', { batch: true }],
  ])('refuses a receipt with %s', (_n, patch) => {
    expect(() => decode(receiptSchema, { ...receipt, ...patch })).toThrow(PayloadError);
  });

  it.each([
    ['no reason', { refused: {} }],
    ['a stored list', { stored: [ids[0]] }],
    ['refused as a list', { refused: [{ id: ids[0], reason: 'malformed' }] }],
  ])('refuses a batch receipt with %s', (_n, patch) => {
    expect(() => decode(receiptSchema, { ...batchReceipt, ...patch })).toThrow(PayloadError);
  });

  it.each(garbage)('refuses garbage %j', (g) => {
    expect(() => decodePayload(receiptSchema, g)).toThrow(PayloadError);
  });
});

describe('key set', () => {
  it('accepts a key set and its signed envelope', () => {
    expect(decode(keySetSchema, keyset)).toEqual(keyset);
    expect(decode(signedKeySetSchema, { keyset, signatures: [sig] })).toMatchObject({ signatures: [sig] });
    expect(decode(keySetSchema, { ...keyset, keys: [], revoked: [] }).keys).toEqual([]);
  });

  it.each([
    ['version 0', { version: 0 }],
    ['version past 2^53', { version: 2 ** 53 }],
    ['expiry before creation', { expiresAt: '2025-01-01T00:00:00.000Z' }],
    ['a key valid backwards', { keys: [{ ...keyset.keys[0], notAfter: '2025-01-01T00:00:00.000Z' }] }],
    ['a duplicate key', { keys: [keyset.keys[0], keyset.keys[0]] }],
    ['a revoked key still listed', { revoked: [{ keyId: rel.keyId, revokedAt: at }] }],
    ['the root also signing releases', { keys: [{ ...keyset.keys[0], keyId: root.keyId, publicKeyPem: root.publicKeyPem }] }],
    ['a non-PEM key', { root: { keyId: root.keyId, publicKeyPem: 'ssh-ed25519 AAAA' } }],
    ['a huge PEM', { root: { keyId: root.keyId, publicKeyPem: `-----BEGIN PUBLIC KEY-----\n${'A'.repeat(2000)}\n-----END PUBLIC KEY-----\n` } }],
    ['a short key id', { root: { keyId: 'abc', publicKeyPem: root.publicKeyPem } }],
    ['the wrong type', { type: 'tuf-root' }],
    ['an unknown key', { threshold: 2 }],
    ['too many keys', { keys: Array.from({ length: 33 }, (_, i) => ({ ...keyset.keys[0], keyId: i.toString(16).padStart(16, '0') })) }],
  ])('refuses a key set with %s', (_n, patch) => {
    expect(() => decode(keySetSchema, { ...keyset, ...patch })).toThrow(PayloadError);
  });

  it.each([
    ['no signature', { signatures: [] }],
    ['two signatures by one key', { signatures: [sig, sig] }],
    ['five signatures', { signatures: Array.from({ length: 5 }, (_, i) => ({ ...sig, keyId: i.toString(16).padStart(16, '0') })) }],
    ['a bad algorithm', { signatures: [{ ...sig, alg: 'rsa' }] }],
    ['a signature that is not base64', { signatures: [{ ...sig, sig: '%%%' }] }],
    ['an unknown key', { signature: sig }],
  ])('refuses a signed key set with %s', (_n, patch) => {
    expect(() => decode(signedKeySetSchema, { keyset, signatures: [sig], ...patch })).toThrow(PayloadError);
  });

  it.each(garbage)('refuses garbage %j', (g) => {
    expect(() => decodePayload(signedKeySetSchema, g)).toThrow(PayloadError);
    expect(() => decodePayload(keySetSchema, g)).toThrow(PayloadError);
  });
});

describe('cloud info', () => {
  const info = { v: 1, protocolVersion: 2, accepts: ['status.ext'], at };
  it('accepts the info and ignores keys a newer cloud adds (read by older daemons)', () => {
    expect(decode(cloudInfoSchema, info)).toEqual(info);
    expect(decode(cloudInfoSchema, { ...info, accepts: ['status.ext', 'some.future-thing'], replicas: 3 })).toEqual({ ...info, accepts: ['status.ext', 'some.future-thing'] });
  });
  it.each([
    ['protocol 0', { protocolVersion: 0 }],
    ['accepts not a list', { accepts: 'status.ext' }],
    ['a feature with spaces', { accepts: ['status ext'] }],
    ['wire v2', { v: 2 }],
    ['no time', { at: undefined }],
  ])('refuses info with %s', (_n, patch) => {
    expect(() => decode(cloudInfoSchema, { ...info, ...patch })).toThrow(PayloadError);
  });
  it.each(garbage)('refuses garbage %j', (g) => expect(() => decodePayload(cloudInfoSchema, g)).toThrow(PayloadError));
});

describe('status protocol-2 fields', () => {
  const base = { v: 1, deviceId: 'pi-1', state: 'online', model: null, release: null, sha256: null, at };
  const ext = { protocolVersion: 2, capabilities: ['receipts', 'a.future-capability'], trust: { keysetVersion: 4, state: 'current' }, degraded: 'revoked_key' };
  it('accepts a status with and without them', () => {
    expect(decode(statusSchema, base)).toEqual(base);
    expect(decode(statusSchema, { ...base, ...ext })).toEqual({ ...base, ...ext });
    expect(decode(statusSchema, { ...base, ...ext, degraded: null, trust: { keysetVersion: null, state: 'trusted_keys' } })).toMatchObject({ degraded: null });
  });
  it.each([
    ['protocol 0', { protocolVersion: 0 }],
    ['an uppercase capability', { capabilities: ['Receipts'] }],
    ['65 capabilities', { capabilities: Array.from({ length: 65 }, (_, i) => `c${i}`) }],
    ['an unknown trust state', { trust: { keysetVersion: 1, state: 'fine' } }],
    ['key set version 0', { trust: { keysetVersion: 0, state: 'current' } }],
    ['a free-text degraded reason', { degraded: 'model is bad!' }],
  ])('refuses a status with %s', (_n, patch) => {
    expect(() => decode(statusSchema, { ...base, ...ext, ...patch })).toThrow(PayloadError);
  });
});
