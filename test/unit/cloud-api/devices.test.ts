import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { provisionBundleSchema } from '../../../cloud/provision/bundle.js';
import { verifyPassword } from '../../../cloud/provision/passwd.js';
import { devices } from '../../../cloud/registry/schema.js';
import { BROKER_URL, call, harness, json, seedModel, seedRelease, type Harness } from './helpers.js';

describe('/v1/devices', () => {
  let h: Harness;
  beforeEach(() => {
    h = harness();
  });
  afterEach(() => h.close());

  it('provisions a device: bundle returned once, only the $7$ hash stored, fleet told', async () => {
    const res = await call(h.app, 'POST', '/v1/devices', { body: { id: 'pi-kitchen', groups: ['kitchen', 'kitchen', 'eu'] } });
    expect(res.status).toBe(201);
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(res.headers.get('location')).toBe('/v1/devices/pi-kitchen');
    const bundle = provisionBundleSchema.parse(await json(res));
    expect(bundle).toMatchObject({ version: 1, deviceId: 'pi-kitchen', mqtt: { url: BROKER_URL, username: 'pi-kitchen' } });
    expect(bundle.mqtt.password).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(bundle.trustedKeys).toEqual(h.keys.trusted());
    expect(bundle.trustedKeys[0]!.keyId).toBe(h.keys.active().keyId);

    const row = h.registry.db.select().from(devices).where(eq(devices.id, 'pi-kitchen')).get()!;
    expect(row.credentialHash).toMatch(/^\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==$/);
    expect(row.credentialHash).not.toContain(bundle.mqtt.password);
    expect(verifyPassword(bundle.mqtt.password, row.credentialHash)).toBe(true);
    expect(verifyPassword('wrong', row.credentialHash)).toBe(false);
    expect(row.groups).toEqual(['kitchen', 'eu']);
    expect(h.fleetCalls).toEqual(['provisioned pi-kitchen kitchen,eu']);

    // Exactly once: provisioning again is a conflict and never reveals anything.
    const again = await call(h.app, 'POST', '/v1/devices', { body: { id: 'pi-kitchen' } });
    expect(again.status).toBe(409);
    expect(await json(again)).toEqual({ error: { code: 'device_exists', message: 'device pi-kitchen already exists', field: 'id' } });
  });

  it('trusts every non-retired key in new bundles after a rotation', async () => {
    const old = h.keys.active().keyId;
    const next = h.keys.rotate().keyId;
    const bundle = await json(await call(h.app, 'POST', '/v1/devices', { body: { id: 'pi-2' } }));
    expect(bundle.trustedKeys.map((k: { keyId: string }) => k.keyId)).toEqual([next, old]);
  });

  it('rejects invalid ids and groups naming the field', async () => {
    for (const [body, field] of [
      [{ id: 'bad/id' }, 'id'],
      [{ id: '+' }, 'id'],
      [{}, 'id'],
      [{ id: 'ok', groups: ['#'] }, 'groups.0'],
      [{ id: 'ok', groups: 'kitchen' }, 'groups'],
      [{ id: 'ok', extra: 1 }, 'extra'],
    ] as const) {
      const res = await call(h.app, 'POST', '/v1/devices', { body });
      expect(res.status, JSON.stringify(body)).toBe(400);
      const err = (await json(res)).error;
      expect(err.code).toBe('invalid_body');
      expect(err.field).toBe(field);
    }
  });

  it('lists devices and shows one with status, running release and telemetry', async () => {
    seedModel(h);
    seedRelease(h, { seq: 3, bytes: Buffer.from('model') });
    await call(h.app, 'POST', '/v1/devices', { body: { id: 'pi-a', groups: ['g'] } });
    await call(h.app, 'POST', '/v1/devices', { body: { id: 'pi-b' } });
    const telemetry = {
      v: 1, deviceId: 'pi-a', at: '2024-05-01T10:00:00.000Z', model: 'digits', release: 3, uptimeSeconds: 12, requests: 5, errors: 0,
      latencyMs: { p50: 1, p95: 2 }, rssBytes: 1000, outbox: { depth: 0, bytes: 0, dropped: 0, evicted: 0, selected: 1, published: 1 }, health: 'ok',
    };
    h.registry.db.update(devices).set({ online: true, lastSeen: '2024-05-01T10:00:00.000Z', runningSeq: 3, runningSha256: 'ab'.repeat(32), lastTelemetry: telemetry }).where(eq(devices.id, 'pi-a')).run();

    const list = await json(await call(h.app, 'GET', '/v1/devices'));
    expect(list.devices.map((d: { id: string; status: string }) => [d.id, d.status])).toEqual([['pi-a', 'online'], ['pi-b', 'never_seen']]);
    expect(list.devices[0]).toMatchObject({ online: true, lastSeen: '2024-05-01T10:00:00.000Z', running: { model: 'digits', release: 3, sha256: 'ab'.repeat(32) }, groups: ['g'] });
    expect(JSON.stringify(list)).not.toMatch(/\$7\$/);

    const one = await json(await call(h.app, 'GET', '/v1/devices/pi-a'));
    expect(one.telemetry).toEqual(telemetry);
    expect((await json(await call(h.app, 'GET', '/v1/devices/pi-b'))).telemetry).toBeNull();
    const missing = await call(h.app, 'GET', '/v1/devices/nope');
    expect(missing.status).toBe(404);
    expect((await json(missing)).error).toMatchObject({ code: 'not_found', field: 'id' });
    expect((await call(h.app, 'GET', '/v1/devices/bad%2Fid')).status).toBe(400);
  });

  it('revokes a device (idempotent), tells the fleet once, and refuses to re-provision the id', async () => {
    await call(h.app, 'POST', '/v1/devices', { body: { id: 'pi-x' } });
    const res = await call(h.app, 'DELETE', '/v1/devices/pi-x');
    expect(res.status).toBe(200);
    expect(await json(res)).toMatchObject({ id: 'pi-x', revoked: true, status: 'revoked', online: false });
    expect((await call(h.app, 'DELETE', '/v1/devices/pi-x')).status).toBe(200);
    expect(h.fleetCalls.filter((c) => c.startsWith('revoked'))).toEqual(['revoked pi-x']);
    const again = await call(h.app, 'POST', '/v1/devices', { body: { id: 'pi-x' } });
    expect(again.status).toBe(409);
    expect((await json(again)).error.message).toMatch(/revoked/);
    expect((await call(h.app, 'DELETE', '/v1/devices/ghost')).status).toBe(404);
  });

  it('still returns the bundle when the fleet hook fails', async () => {
    h.close();
    h = harness({ fleet: { onDeviceProvisioned: async () => { throw new Error('broker down'); }, onDeviceRevoked: async () => undefined } });
    const res = await call(h.app, 'POST', '/v1/devices', { body: { id: 'pi-y' } });
    expect(res.status).toBe(201);
    expect(provisionBundleSchema.safeParse(await json(res)).success).toBe(true);
  });
});
