/**
 * Issue 10 item 11: the new parsers under malformed input, device side and ingest side. Seeded mutations
 * of valid documents (test/unit/fuzz/gen.ts) and raw junk: key sets (over MQTT and in a provisioning
 * bundle), signed assignments, the cloud's info, receipts, status with its trust fields, and feedback
 * labels at ingest. Each case must be refused by its schema or verifier (a verdict, never a throw), and
 * leave no state behind.
 */
import { readdir } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ingest } from '../../../cloud/fleet/ingest.js';
import { devices, examples } from '../../../cloud/registry/schema.js';
import { CloudInfoWatcher } from '../../../edge/status/index.js';
import { TrustStore, TrustStoreError } from '../../../edge/updates/index.js';
import { generateSigningKey, signAssignment, signKeySet, toTrustedKey, verifyAssignment, verifyKeySet } from '../../../shared/manifest/index.js';
import { cloudInfo, cloudInfoSchema, decodePayload, PayloadError, receiptSchema, statusSchema, type KeySet, type Receipt, type Status } from '../../../shared/protocol/index.js';
import { FleetFixture, examplesPayload } from '../fleet/fixtures.js';
import { tempDir } from '../updates/fixtures.js';
import { Gen } from './gen.js';

const CASES = 300;
const day = 86_400_000;
const iso = (t: number) => new Date(t).toISOString();
const root = generateSigningKey();
const release = generateSigningKey();
const t0 = Date.now();
const keyset: KeySet = {
  v: 1, type: 'apprentice-keyset', version: 1, createdAt: iso(t0), expiresAt: iso(t0 + 90 * day), root: toTrustedKey(root),
  keys: [{ ...toTrustedKey(release), notBefore: iso(t0 - day), notAfter: iso(t0 + 365 * day) }], revoked: [],
};
const signedKeySet = signKeySet(keyset, [root.privateKeyPem, release.privateKeyPem]);
const buf = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v) ?? 'null');

/** Half mutations of a valid document, a quarter random JSON, a quarter raw bytes. */
function cases<T>(g: Gen, valid: T): Buffer[] {
  return Array.from({ length: CASES }, (_, i) => (i % 4 === 0 ? g.junk() : i % 4 === 1 ? buf(g.json()) : buf(g.mutate(valid))));
}

describe('key sets', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeAll(async () => ({ dir, cleanup } = await tempDir()));
  afterAll(() => cleanup());

  it('a mutated or junk key set gets a refusal verdict from the verifier and the trust store, and nothing is written', async () => {
    const g = new Gen(1001);
    const trust = await TrustStore.open({ dataDir: dir, trustedKeys: [toTrustedKey(release)], rootKey: toTrustedKey(root) });
    for (const [i, payload] of cases(g, signedKeySet).entries()) {
      const v = verifyKeySet(payload, { root: toTrustedKey(root), bootstrapKeys: [toTrustedKey(release)] });
      expect(v.ok, `case ${i}: ${payload.toString().slice(0, 200)}`).toBe(false);
      const o = await trust.apply(payload);
      expect(o.ok === false || o.ok === 'ignored', `case ${i}`).toBe(true);
    }
    expect(trust.state()).toEqual({ keysetVersion: null, state: 'trusted_keys' });
    expect(await readdir(dir)).toEqual([]);
    // The real one still goes through afterwards.
    expect(await trust.apply(buf(signedKeySet))).toMatchObject({ ok: true });
  });

  it('a mutated bundled key set stops the start with TrustStoreError (never another error), and a held key set is untouched', async () => {
    const g = new Gen(1002);
    const { dir: d2, cleanup: c2 } = await tempDir();
    try {
      const trust = await TrustStore.open({ dataDir: d2, trustedKeys: [toTrustedKey(release)], rootKey: toTrustedKey(root) });
      for (let i = 0; i < CASES / 3; i++) {
        const bad = g.mutate(signedKeySet);
        await expect(trust.applyBundled(bad), `case ${i}: ${JSON.stringify(bad).slice(0, 200)}`).rejects.toThrow(TrustStoreError);
      }
      expect(await readdir(d2)).toEqual([]);
    } finally {
      await c2();
    }
  });
});

describe('signed assignments', () => {
  it('a mutated assignment is refused with a verdict', () => {
    const g = new Gen(1003);
    const signed = signAssignment({ deviceId: 'pi-1', model: 'digits', cohort: null }, release.privateKeyPem);
    for (let i = 0; i < CASES; i++) {
      const bad = i % 3 === 0 ? g.json() : g.mutate(signed);
      const v = verifyAssignment(bad, [toTrustedKey(release)]);
      expect(v.ok, `case ${i}: ${JSON.stringify(bad)?.slice(0, 200)}`).toBe(false);
      if (!v.ok) expect(['malformed_manifest', 'unknown_key', 'bad_signature']).toContain(v.reason);
    }
  });
});

describe('cloud info', () => {
  it('a malformed retained info is taken as absent (protocol-1 payloads), and a good one is still read', () => {
    const g = new Gen(1004);
    const watcher = new CloudInfoWatcher({ client: null as never });
    const valid = cloudInfo(new Date());
    for (const [i, payload] of cases(g, valid).entries()) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(payload.toString('utf8'));
      } catch {
        parsed = undefined;
      }
      watcher.handle(payload);
      // The info schema is deliberately not strict (older daemons read newer infos): judge by it.
      const ok = parsed !== undefined && cloudInfoSchema.safeParse(parsed).success && payload.byteLength > 0;
      expect(watcher.current !== undefined, `case ${i}: ${payload.toString().slice(0, 200)}`).toBe(ok);
    }
    watcher.handle(buf(valid));
    expect(watcher.current?.protocolVersion).toBe(valid.protocolVersion);
  });
});

describe('receipts', () => {
  it('a mutated receipt is refused by its schema with a PayloadError', () => {
    const g = new Gen(1005);
    const id = '4b0d3f0e-8a65-4d8a-9a39-6f1c2f0b8a11';
    const valid: Receipt = { v: 1, deviceId: 'pi-1', at: new Date().toISOString(), kind: 'examples', batchId: id, stored: [], refused: [], deferred: [{ id, retryAfterSeconds: 30 }] };
    let accepted = 0;
    for (const [i, payload] of cases(g, valid).entries()) {
      try {
        decodePayload(receiptSchema, payload);
        accepted++; // a mutation that kept it valid (e.g. a changed retry time): the schema judged it
      } catch (err) {
        expect(err, `case ${i}`).toBeInstanceOf(PayloadError);
      }
    }
    expect(accepted).toBeLessThan(CASES / 4);
  });
});

describe('ingest: status trust fields and feedback labels', () => {
  let fx: FleetFixture;
  let ingest: Ingest;
  beforeAll(async () => {
    fx = new FleetFixture();
    fx.addDevice('pi-1');
    ingest = await Ingest.create({ registry: fx.registry, stateFlushMs: 0 });
  });
  afterAll(async () => {
    await ingest.dispose();
    fx.dispose();
  });

  it('a status with malformed trust / degraded fields is counted malformed and changes no device row', async () => {
    const g = new Gen(1006);
    const valid: Status = { v: 1, deviceId: 'pi-1', state: 'online', model: null, release: null, sha256: null, at: new Date().toISOString(), protocolVersion: 2, capabilities: ['keyset'], trust: { keysetVersion: 3, state: 'current' }, degraded: null };
    const row = () => fx.db.select().from(devices).all().find((d) => d.id === 'pi-1');
    const before = JSON.stringify(row());
    let refused = 0;
    for (let i = 0; i < CASES; i++) {
      const bad = { ...valid, ...(g.chance(0.5) ? { trust: g.mutate(valid.trust) } : { degraded: g.odd() }) };
      if (statusSchema.safeParse(bad).success) continue; // still a valid status (e.g. degraded: null): not a malformed case
      const m0 = ingest.stats().malformed;
      await expect(ingest.handleMessage('status', 'pi-1', buf(bad)), `case ${i}`).resolves.toBeUndefined();
      expect(ingest.stats().malformed, `case ${i}: ${JSON.stringify(bad).slice(0, 200)}`).toBe(m0 + 1);
      refused++;
    }
    await ingest.flush();
    expect(refused).toBeGreaterThan(CASES / 2);
    expect(JSON.stringify(row())).toBe(before);
  });

  it('mutated feedback examples are refused one by one; no refused row is stored', async () => {
    const g = new Gen(1007);
    let storedExpected = 0;
    for (let i = 0; i < CASES / 3; i++) {
      const doc = JSON.parse(examplesPayload('pi-1', 3, { label: 1 }).payload.toString()) as { examples: unknown[] };
      doc.examples[1] = g.mutate(doc.examples[1]);
      await ingest.handleMessage('examples', 'pi-1', buf(doc));
      storedExpected += 2;
    }
    await ingest.flush();
    const rows = fx.db.select({ reason: examples.reason, label: examples.label }).from(examples).all();
    // Every intact feedback row is stored with its label; a mutated one only if it is still a valid example.
    expect(rows.length).toBeGreaterThanOrEqual(storedExpected);
    expect(rows.length).toBeLessThan(storedExpected + CASES / 3);
    expect(rows.every((r) => r.label === null || r.reason === 'feedback')).toBe(true);
    expect(ingest.deviceCounts()['pi-1']!.refused).toBeGreaterThan(0);
  });
});
