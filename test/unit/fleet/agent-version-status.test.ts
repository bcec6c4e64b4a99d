/** Issue 14: the agent's version and platform travel in status, gated for older clouds, and the devices API shows them. */
import { describe, expect, it } from 'vitest';
import { Ingest } from '../../../cloud/fleet/ingest.js';
import { AGENT, statusExtension, statusFieldsFor, statusPayload } from '../../../edge/status/index.js';
import { CLOUD_FEATURES, statusSchema, type CloudFeature } from '../../../shared/protocol/index.js';
import { call, harness, json } from '../cloud-api/helpers.js';

const platform = `${process.platform}-${process.arch}`;
const ext = statusExtension({ degraded: null });
const cloudOf = (accepts: CloudFeature[]) => (f: CloudFeature) => accepts.includes(f);

describe('status fields by what the cloud accepts', () => {
  it('a cloud accepting status.platform gets the platform', () => {
    const s = JSON.parse(statusPayload('pi-1', 'online', null, new Date(), statusFieldsFor(ext, cloudOf([CLOUD_FEATURES.statusExt, CLOUD_FEATURES.statusPlatform]))).toString());
    expect(s).toMatchObject({ agent: AGENT, platform });
  });
  it('an older cloud (status.ext only) gets a status its strict schema accepts: no platform', () => {
    const olderSchema = statusSchema.omit({ platform: true }).strict();
    const s = JSON.parse(statusPayload('pi-1', 'online', null, new Date(), statusFieldsFor(ext, cloudOf([CLOUD_FEATURES.statusExt]))).toString());
    expect(s.platform).toBeUndefined();
    expect(olderSchema.safeParse(s).success).toBe(true);
    expect(olderSchema.safeParse({ ...s, platform }).success).toBe(false); // what sending it anyway would cause
  });
});

describe('the devices API shows agent and platform', () => {
  it('null before any status; what the last online status said after (detail and list)', async () => {
    const h = harness();
    try {
      expect((await call(h.app, 'POST', '/v1/devices', { body: { id: 'pi-ver' } })).status).toBe(201);
      expect(await json(await call(h.app, 'GET', '/v1/devices/pi-ver'))).toMatchObject({ agent: null, platform: null });
      const ingest = await Ingest.create({ registry: h.registry });
      const fields = statusFieldsFor(ext, cloudOf([CLOUD_FEATURES.statusExt, CLOUD_FEATURES.statusPlatform]));
      await ingest.handleMessage('status', 'pi-ver', statusPayload('pi-ver', 'online', null, new Date(), fields));
      await ingest.dispose();
      expect(await json(await call(h.app, 'GET', '/v1/devices/pi-ver'))).toMatchObject({ agent: AGENT, platform });
      const list = (await json(await call(h.app, 'GET', '/v1/devices'))) as { devices: { id: string; agent: string; platform: string }[] };
      expect(list.devices.find((d) => d.id === 'pi-ver')).toMatchObject({ agent: AGENT, platform });
    } finally {
      h.close();
    }
  });
});
