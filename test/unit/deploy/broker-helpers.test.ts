import { existsSync } from 'node:fs';
import mqtt, { type MqttClient } from 'mqtt';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  MosquittoMissingError,
  WaitForTimeoutError,
  brokerMatrix,
  canConnect,
  freePort,
  mosquittoAvailable,
  requireMosquittoOrSkip,
  skipWithoutMosquitto,
  sleep,
  startMosquitto,
  waitFor,
  type TestBroker,
} from '../../helpers/broker.js';

const clients: MqttClient[] = [];
const brokers: TestBroker[] = [];

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
  await Promise.all(brokers.splice(0).map((b) => b.stop()));
  vi.unstubAllEnvs();
});

async function connect(url: string): Promise<MqttClient> {
  const c = await mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 50, connectTimeout: 2_000 });
  clients.push(c);
  return c;
}

/** Subscribes and collects payloads of one topic. */
async function collect(c: MqttClient, topic: string): Promise<string[]> {
  const got: string[] = [];
  c.on('message', (t, p) => {
    if (t === topic) got.push(p.toString());
  });
  await c.subscribeAsync(topic, { qos: 1 });
  return got;
}

describe('net helpers', () => {
  it('freePort returns a bindable port and canConnect sees nothing there', async () => {
    const port = await freePort();
    expect(port).toBeGreaterThan(0);
    expect(await canConnect(port)).toBe(false);
  });

  it('waitFor returns the truthy value, and times out with the message and last error', async () => {
    let n = 0;
    await expect(waitFor(() => (++n >= 3 ? { n } : undefined), 1_000, { intervalMs: 1 })).resolves.toEqual({ n: 3 });
    const err = await waitFor(
      () => {
        throw new Error('boom');
      },
      30,
      { message: 'the thing' },
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WaitForTimeoutError);
    expect(String(err)).toMatch(/the thing not met within 30 ms \(last error: boom\)/);
  });
});

describe.each(brokerMatrix())('$name test broker', ({ name, start }) => {
  it('accepts clients, restarts on the same port, and stops', async () => {
    const b = await start();
    brokers.push(b);
    expect(b.kind).toBe(name);
    expect(b.url).toBe(`mqtt://127.0.0.1:${b.port}`);

    const sub = await connect(b.url);
    const pub = await connect(b.url);
    const got = await collect(sub, 't/1');
    await pub.publishAsync('t/1', 'before', { qos: 1 });
    await waitFor(() => got.includes('before'), 2_000, { message: 'message before restart' });

    const port = b.port;
    let reconnects = 0;
    sub.on('connect', () => reconnects++);
    await b.restart();
    expect(b.port).toBe(port);
    // The broker dropped us; MQTT.js reconnects by itself. A clean session lost the subscription: redo it.
    await waitFor(() => reconnects > 0 && sub.connected && pub.connected, 5_000, { message: 'reconnect' });
    await sub.subscribeAsync('t/1', { qos: 1 });
    await pub.publishAsync('t/1', 'after', { qos: 1 });
    await waitFor(() => got.includes('after'), 2_000, { message: 'message after restart' });

    await b.stop();
    await b.stop(); // idempotent
    expect(await canConnect(port)).toBe(false);
  });

  it('keeps retained messages across restart only when persistent', async () => {
    for (const persistent of [true, false]) {
      const b = await start({ persistent });
      brokers.push(b);
      const pub = await connect(b.url);
      await pub.publishAsync('r/1', 'kept', { qos: 1, retain: true });
      await pub.endAsync();
      await b.restart();
      const sub = await connect(b.url);
      const got = await collect(sub, 'r/1');
      if (persistent) {
        await waitFor(() => got.includes('kept'), 2_000, { message: `retained after restart (${name})` });
      } else {
        // SUBACK already came back; a retained message would have been sent before it returns.
        await sleep(100);
        expect(got).toEqual([]);
      }
    }
  });
});

describe.skipIf(skipWithoutMosquitto())('mosquitto specifics', () => {
  it('kill(SIGKILL) then restart() brings a crashed broker back on the same port', async () => {
    const m = await startMosquitto({ config: ['max_keepalive 60'] });
    brokers.push(m);
    const pid = m.pid;
    expect(pid).toBeTypeOf('number');
    await m.kill('SIGKILL');
    expect(m.pid).toBeUndefined();
    expect(await canConnect(m.port)).toBe(false);
    await m.restart();
    expect(m.pid).not.toBe(pid);
    await connect(m.url);
    expect(m.logs()).toMatch(/mosquitto version .* running/);
  });

  it('reports a config error with mosquitto output and cleans its temp dir', async () => {
    let dir = '';
    const err = await startMosquitto({
      fullConfig: ({ port, dir: d }) => {
        dir = d;
        return `listener ${port} 127.0.0.1\nno_such_option 1\n`;
      },
    }).catch((e: unknown) => e);
    expect(String(err)).toMatch(/exited with 3[\s\S]*Unknown configuration variable "no_such_option"/);
    expect(existsSync(dir)).toBe(false);
  });
});

describe('skip / require policy', () => {
  it('without the binary: aedes only and skip; with APPRENTICE_REQUIRE_MOSQUITTO=1: a failure', async () => {
    vi.stubEnv('APPRENTICE_MOSQUITTO_BIN', '/nonexistent/mosquitto');
    vi.stubEnv('APPRENTICE_REQUIRE_MOSQUITTO', '');
    vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    expect(mosquittoAvailable()).toBe(false);
    expect(brokerMatrix().map((c) => c.name)).toEqual(['aedes']);
    expect(skipWithoutMosquitto()).toBe(true);
    const skip = vi.fn();
    requireMosquittoOrSkip({ skip });
    expect(skip).toHaveBeenCalledWith(expect.stringMatching(/mosquitto binary not found/));

    vi.stubEnv('APPRENTICE_REQUIRE_MOSQUITTO', '1');
    expect(skipWithoutMosquitto()).toBe(false);
    expect(() => requireMosquittoOrSkip({ skip })).toThrow(MosquittoMissingError);
    const matrix = brokerMatrix();
    expect(matrix.map((c) => c.name)).toEqual(['aedes', 'mosquitto']);
    await expect(matrix[1]!.start()).rejects.toThrow(MosquittoMissingError);
    await expect(startMosquitto()).rejects.toThrow(MosquittoMissingError);
    vi.restoreAllMocks();
  });
});
