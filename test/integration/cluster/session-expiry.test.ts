/**
 * Issue 15 item 4, MQTT side: a cloud replica that is gone keeps its persistent session in the broker, and
 * Mosquitto keeps giving that session its turn of the `$share/cloud/...` group's device messages until the
 * session expires. With MQTT 5 the cloud sets the expiry (`mqtt.sessionExpirySeconds`; 300 s by default
 * for a replica, cloud/config/schema.ts `mqttSessionExpirySeconds`); here 2 s, on a private Mosquitto, with
 * the cloud's own MQTT client (CloudMqtt). Before the expiry part of the traffic goes to the dead replica's
 * queue (the problem); after it every message reaches the live replica.
 */
import mqttLib from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { CloudMqtt } from '../../../cloud/fleet/mqtt.js';
import { topics } from '../../../shared/protocol/index.js';
import { skipWithoutMosquitto, sleep, startMosquitto, waitFor, type MosquittoBroker } from '../../helpers/broker.js';

const EXPIRY_SECONDS = 2;
const MESSAGES = 40;

describe.skipIf(skipWithoutMosquitto())('a dead replica\'s share of device messages after its MQTT 5 session expiry', () => {
  let broker: MosquittoBroker | undefined;
  const clients: { dispose(): Promise<void> }[] = [];
  afterEach(async () => {
    for (const c of clients.splice(0)) await c.dispose();
    await broker?.stop();
  });

  /** A replica's MQTT client consuming telemetry through the shared group; `got` counts what it received. */
  async function replica(name: string): Promise<{ mqtt: CloudMqtt; got: () => number }> {
    const mqtt = new CloudMqtt({ url: broker!.url, clientId: `apprentice-cloud-${name}`, sharedSubscriptions: true, protocolVersion: 5, sessionExpirySeconds: EXPIRY_SECONDS });
    clients.push(mqtt);
    let got = 0;
    mqtt.onDevice('telemetry', () => void got++);
    await mqtt.start();
    await waitFor(() => mqtt.connected, 5_000, { message: `${name} connected` });
    // CloudMqtt subscribes on CONNACK; give the SUBACK a moment (the first phase checks both consume).
    await sleep(300);
    return { mqtt, got: () => got };
  }

  async function send(n: number): Promise<void> {
    const device = await mqttLib.connectAsync(broker!.url, { clientId: 'device-d1', protocolVersion: 5 });
    try {
      for (let i = 0; i < n; i++) await device.publishAsync(topics.telemetry('d1'), JSON.stringify({ i }), { qos: 1 });
    } finally {
      await device.endAsync();
    }
  }

  it('before the expiry the dead replica\'s session takes part of the traffic; after it the live replica gets every message', async () => {
    broker = await startMosquitto({ config: ['connection_messages true'] });
    const a = await replica('a');
    const b = await replica('b');
    // Both consume: the group splits the traffic.
    await send(MESSAGES);
    await waitFor(() => a.got() + b.got() === MESSAGES, 10_000, { message: 'all messages consumed' });
    expect(a.got()).toBeGreaterThan(0);
    expect(b.got()).toBeGreaterThan(0);

    // Replica a goes away (its session stays for EXPIRY_SECONDS).
    await a.mqtt.dispose();
    const before = b.got();
    await send(MESSAGES);
    await sleep(1000);
    const toLive = b.got() - before;
    // Part of it went to a's queued session, not to b.
    expect(toLive).toBeLessThan(MESSAGES);

    // After the expiry the group is b alone.
    await sleep(EXPIRY_SECONDS * 1000 + 1500);
    const after = b.got();
    await send(MESSAGES);
    await waitFor(() => b.got() - after === MESSAGES, 10_000, { message: `the live replica got all ${MESSAGES}` });
    await sleep(300);
    expect(b.got() - after).toBe(MESSAGES);
  }, 60_000);
});
