/**
 * A device may retain only its status. Mosquitto's ACL cannot see the retain flag, so the cloud ignores
 * a retained telemetry/event/example message from a device and clears it (issue 10, client identity).
 */
import { randomUUID } from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CloudMqtt, type DeviceMessage } from '../../../cloud/fleet/mqtt.js';
import { topics } from '../../../shared/protocol/index.js';
import { brokerMatrix, sleep, waitFor, type TestBroker } from '../../helpers/broker.js';

describe.each(brokerMatrix())('retained device messages over $name', ({ start }) => {
  let broker: TestBroker;
  let device: MqttClient;

  beforeAll(async () => {
    broker = await start();
    device = await mqtt.connectAsync(broker.url, { clientId: `pi-ret-${randomUUID().slice(0, 6)}` });
  });
  afterAll(async () => {
    await device?.endAsync(true);
    await broker?.stop();
  });

  it('the cloud ignores a retained telemetry and clears it; a retained status is handled', async () => {
    const id = `pi-${randomUUID().slice(0, 8)}`;
    await device.publishAsync(topics.telemetry(id), 'sticky', { qos: 1, retain: true });
    await device.publishAsync(topics.status(id), 'online', { qos: 1, retain: true });
    const cloud = await CloudMqtt.create({ url: broker.url, clientId: `cloud-${randomUUID().slice(0, 8)}`, sharedSubscriptions: false });
    const got: DeviceMessage[] = [];
    try {
      cloud.onDevice('telemetry', (m) => void got.push(m));
      cloud.onDevice('status', (m) => void got.push(m));
      await waitFor(() => got.some((m) => m.kind === 'status'), 15_000, { message: 'the retained status' });
      await sleep(300);
      expect(got.map((m) => `${m.kind}:${m.deviceId}:${m.retain}`)).toEqual([`status:${id}:true`]);

      // The broker no longer holds the telemetry: a fresh subscriber gets nothing for it.
      const probe = await mqtt.connectAsync(broker.url, { clientId: `probe-${randomUUID().slice(0, 6)}` });
      const seen: string[] = [];
      probe.on('message', (t, p) => seen.push(`${t}=${p.toString()}`));
      await probe.subscribeAsync([topics.telemetry(id), topics.status(id)], { qos: 1 });
      await waitFor(() => seen.length >= 1, 15_000, { message: 'the status, for the probe' });
      await sleep(300);
      expect(seen).toEqual([`${topics.status(id)}=online`]);
      await probe.endAsync(true);
    } finally {
      await cloud.publish(topics.status(id), Buffer.alloc(0), { qos: 1, retain: true });
      await cloud.dispose();
    }
  });
});
