import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jitterReconnects } from '../../../edge/config/reconnect.js';
import { requireMosquittoOrSkip, waitFor } from '../../helpers/broker.js';
import { mosquittoAvailable, startMosquitto, type MosquittoBroker } from '../../helpers/mosquitto.js';

/**
 * Issue 8, thundering herd: after a broker crash a device's reconnect attempts back off exponentially
 * (jittered) instead of every fixed `reconnectPeriod`, and the backoff starts over once connected.
 */
describe('jittered MQTT reconnects (real Mosquitto)', () => {
  let broker: MosquittoBroker | undefined;
  let client: MqttClient | undefined;
  beforeAll(async () => {
    if (mosquittoAvailable()) broker = await startMosquitto();
  });
  afterAll(async () => {
    await client?.endAsync(true);
    await broker?.stop();
  });

  /** Gaps between reconnect attempts while the broker stays down for `ms`. */
  async function gapsWhileDown(c: MqttClient, ms: number): Promise<number[]> {
    const at: number[] = [];
    const onReconnect = () => at.push(performance.now());
    c.on('reconnect', onReconnect);
    const down = performance.now();
    await broker!.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, ms));
    c.off('reconnect', onReconnect);
    return [at[0]! - down, ...at.slice(1).map((t, i) => t - at[i]!)];
  }

  it('a broker crash: attempts back off 100 → 200 → 400 → 800 ms (not every 100 ms), and start over after a reconnect', async (ctx) => {
    requireMosquittoOrSkip(ctx);
    client = mqtt.connect(broker!.url, { clientId: `jitter-${process.pid}`, reconnectPeriod: 100, connectTimeout: 2000 });
    await waitFor(() => client!.connected, 5000, { message: 'connected' });
    // random 0.999: the top of each jitter window, so the expected ceilings are exact to a few ms.
    jitterReconnects(client, { initialMs: 100, maxMs: 800, random: () => 0.999 });

    const gaps = await gapsWhileDown(client, 2500);
    // A fixed 100 ms period would make ~25 attempts; 100+200+400+800+800 ms fit 5.
    expect(gaps.length).toBeLessThanOrEqual(6);
    expect(gaps.length).toBeGreaterThanOrEqual(3);
    const floors = [100, 200, 400];
    floors.forEach((f, i) => expect(gaps[i], `gap ${i}: ${gaps.join(', ')}`).toBeGreaterThanOrEqual(f * 0.95));

    await broker!.restart();
    await waitFor(() => client!.connected, 10_000, { message: 'reconnected after the restart' });
    const again = await gapsWhileDown(client, 400);
    expect(again[0], `first gap after reconnect: ${again.join(', ')}`).toBeLessThan(200);
  });
});
