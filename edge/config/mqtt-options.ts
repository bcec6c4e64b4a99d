import { readFile } from 'node:fs/promises';
import type { IClientOptions } from 'mqtt';
import { ConfigError } from './load.js';
import type { EdgeConfig } from './schema.js';

export interface MqttWill {
  topic: string;
  payload: Buffer;
  qos: 1;
  retain: true;
}

async function readConfigFile(field: string, file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    throw new ConfigError([`mqtt.${field}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`]);
  }
}

/**
 * MQTT.js client options for the device, files (password, CA, client certificate) read once at start so
 * an unreadable file is a config error (exit 2), not a reconnect loop.
 *
 * - `manualConnect`: the daemon connects only after the local API serves (it must not wait on a broker);
 * - `reconnectPeriod` > 0 and no give-up: reconnects are normal (STYLE.md 4), forever;
 * - `resubscribe: false`: the daemon subscribes `desired` itself on every connect (a clean session
 *   starts with no subscriptions), so the retained manifest is delivered once per connect, not twice;
 *   edge/updates' chunk download resubscribes itself when this is off;
 * - `writeCache: false`: no pre-generated packet-number cache (memory, see below);
 * - `will`: the retained `offline` status the broker publishes when the connection dies ([MQTT-3.1.2-8]).
 *
 * @example
 * const client = mqtt.connect(await mqttClientOptions(config, will));
 */
export async function mqttClientOptions(config: EdgeConfig, will: MqttWill): Promise<IClientOptions> {
  const m = config.mqtt;
  const opts: IClientOptions = {
    // The client id is the device id, which brokers tie to the username (issue 10: no session takeover).
    clientId: config.deviceId,
    protocolVersion: m.protocolVersion,
    clean: true,
    keepalive: m.keepaliveSeconds,
    reconnectPeriod: m.reconnectMs,
    connectTimeout: m.connectTimeoutMs,
    resubscribe: false,
    manualConnect: true,
    // QoS 0 telemetry is only sent while connected; nothing to queue.
    queueQoSZero: false,
    will,
    rejectUnauthorized: m.rejectUnauthorized,
    // mqtt-packet's number cache is 65,536 two-byte Buffers: 6.9 MB of heap (a heap snapshot of the idle
    // daemon, issue 9) to save an allocation per packet id; the device sends a few packets a second.
    writeCache: false,
  };
  if (m.username !== undefined) opts.username = m.username;
  if (m.password !== undefined) opts.password = m.password;
  if (m.passwordFile !== undefined) opts.password = (await readConfigFile('passwordFile', m.passwordFile)).toString('utf8').split(/\r?\n/)[0];
  if (m.caFile !== undefined) opts.ca = await readConfigFile('caFile', m.caFile);
  if (m.certFile !== undefined) opts.cert = await readConfigFile('certFile', m.certFile);
  if (m.keyFile !== undefined) opts.key = await readConfigFile('keyFile', m.keyFile);
  return opts;
}
