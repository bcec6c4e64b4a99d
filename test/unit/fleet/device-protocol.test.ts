/** Both ends of the compatibility policy that need no broker: ingest's record of it, and the device's cloud-info parser. */
import type { MqttClient } from 'mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { deviceCompatOf } from '../../../cloud/fleet/device-compat.js';
import { Ingest } from '../../../cloud/fleet/ingest.js';
import { CloudInfoWatcher } from '../../../edge/status/index.js';
import { CLOUD_FEATURES } from '../../../shared/protocol/index.js';
import { call, harness, json } from '../cloud-api/helpers.js';
import { FleetFixture, statusPayload } from './fixtures.js';

const withExt = (deviceId: string, state: 'online' | 'offline', caps: string[]) => {
  const s = JSON.parse(statusPayload(deviceId, null, null, state).toString());
  return Buffer.from(JSON.stringify({ ...s, protocolVersion: 2, capabilities: caps, trust: { keysetVersion: 3, state: 'trust_stale' }, degraded: 'revoked_key' }));
};

describe('ingest records what a device declares', () => {
  let fx: FleetFixture;
  let ingest: Ingest;
  beforeEach(async () => {
    fx = new FleetFixture();
    fx.addDevice('pi-1');
    ingest = await Ingest.create({ registry: fx.registry });
  });
  afterEach(async () => {
    await ingest.dispose();
    fx.dispose();
  });

  it('from online statuses; a daemon downgraded to protocol 1 is back to nothing; a last will changes nothing', async () => {
    expect(await deviceCompatOf(fx.registry, 'pi-1')).toEqual({ protocolVersion: 1, capabilities: new Set() });
    await ingest.handleMessage('status', 'pi-1', withExt('pi-1', 'online', ['receipts', 'keyset']));
    await ingest.flush(); // status writes are batched
    expect(fx.device('pi-1')).toMatchObject({ protocolVersion: 2, capabilities: ['receipts', 'keyset'], trust: { keysetVersion: 3, state: 'trust_stale' }, degraded: 'revoked_key' });
    expect(await deviceCompatOf(fx.registry, 'pi-1')).toEqual({ protocolVersion: 2, capabilities: new Set(['receipts', 'keyset']) });

    // The will was composed at connect: it may be stale, so it must not overwrite what the device said.
    await ingest.handleMessage('status', 'pi-1', withExt('pi-1', 'offline', []));
    await ingest.flush(); // status writes are batched
    expect(fx.device('pi-1')).toMatchObject({ capabilities: ['receipts', 'keyset'] });

    await ingest.handleMessage('status', 'pi-1', statusPayload('pi-1', null));
    await ingest.flush(); // status writes are batched
    expect(fx.device('pi-1')).toMatchObject({ protocolVersion: null, capabilities: null, trust: null, degraded: null });
    expect(await deviceCompatOf(fx.registry, 'pi-1')).toEqual({ protocolVersion: 1, capabilities: new Set() });
    expect(await deviceCompatOf(fx.registry, 'nobody')).toEqual({ protocolVersion: 1, capabilities: new Set() });
  });
});

describe('CloudInfoWatcher', () => {
  const info = (accepts: string[], extra: object = {}) => Buffer.from(JSON.stringify({ v: 1, protocolVersion: 2, accepts, at: '2026-01-01T00:00:00Z', ...extra }));

  it('follows the retained info; malformed or cleared info means an older cloud', () => {
    const changes: unknown[] = [];
    const w = new CloudInfoWatcher({ client: {} as MqttClient, onChange: (i) => changes.push(i?.accepts ?? null) });
    expect(w.accepts(CLOUD_FEATURES.statusExt)).toBe(false);
    w.handle(info(['status.ext', 'from.the-future'], { newKey: 1 }));
    expect(w.accepts(CLOUD_FEATURES.statusExt)).toBe(true);
    w.handle(info(['from.the-future', 'status.ext'])); // same set: no change
    for (const bad of ['{', 'null', '[]', JSON.stringify({ v: 1, protocolVersion: 'two', accepts: [], at: 'x' }), '\u0000\u0001']) {
      w.handle(info(['status.ext']));
      w.handle(Buffer.from(bad));
      expect(w.accepts(CLOUD_FEATURES.statusExt)).toBe(false);
    }
    w.handle(info(['status.ext']));
    w.handle(Buffer.alloc(0));
    expect(w.current).toBeUndefined();
    expect(changes.slice(0, 2)).toEqual([['status.ext', 'from.the-future'], ['status.ext']]);
    expect(changes.at(-1)).toBeNull();
  });
});

describe('the devices API shows it', () => {
  it('protocol 1 and no trust before any status; what ingest recorded after', async () => {
    const h = harness();
    try {
      expect((await call(h.app, 'POST', '/v1/devices', { body: { id: 'pi-api' } })).status).toBe(201);
      expect(await json(await call(h.app, 'GET', '/v1/devices/pi-api'))).toMatchObject({ protocol: { version: 1, capabilities: [] }, trust: null, degraded: null });
      const ingest = await Ingest.create({ registry: h.registry });
      await ingest.handleMessage('status', 'pi-api', withExt('pi-api', 'online', ['receipts']));
      await ingest.dispose();
      expect(await json(await call(h.app, 'GET', '/v1/devices/pi-api'))).toMatchObject({ protocol: { version: 2, capabilities: ['receipts'] }, trust: { keysetVersion: 3, state: 'trust_stale' }, degraded: 'revoked_key' });
    } finally {
      h.close();
    }
  });
});

describe('provisioning reserves the cloud and legacy edge client ids', () => {
  it.each(['apprentice-cloud', 'apprentice-cloud-host1', 'Apprentice-Cloud-2', 'apprentice-edge-pi-1'])('refuses device id %s with a 400 naming the field', async (id) => {
    const h = harness();
    try {
      const res = await call(h.app, 'POST', '/v1/devices', { body: { id } });
      expect(res.status).toBe(400);
      expect(JSON.stringify(await json(res))).toMatch(/reserved/);
    } finally {
      h.close();
    }
  });
  it('still accepts ordinary ids that merely contain the words', async () => {
    const h = harness();
    try {
      expect((await call(h.app, 'POST', '/v1/devices', { body: { id: 'my-apprentice-edge-1' } })).status).toBe(201);
    } finally {
      h.close();
    }
  });
});
