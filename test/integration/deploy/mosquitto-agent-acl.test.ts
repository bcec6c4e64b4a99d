/**
 * Issue 14: the agent release topic (`devices/{id}/agent`) on a real Mosquitto with the ACL that
 * `apprentice broker-auth` generates (cloud/provision/broker-auth.ts, from DEVICE_READABLE_KINDS): a
 * device reads its own retained agent release, never another device's (exact topic or wildcard), and
 * cannot write its own.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeBrokerAuth } from '../../../cloud/provision/broker-auth.js';
import { hashPassword } from '../../../cloud/provision/passwd.js';
import { Registry } from '../../../cloud/registry/db.js';
import { devices } from '../../../cloud/registry/schema.js';
import { topics } from '../../../shared/protocol/topics.js';
import { skipWithoutMosquitto, sleep, waitFor } from '../../helpers/broker.js';
import { startMosquitto, type MosquittoBroker } from '../../helpers/mosquitto.js';

describe.skipIf(skipWithoutMosquitto())('agent topic ACL on Mosquitto (generated ACL)', () => {
  let dir: string;
  let registry: Registry;
  let broker: MosquittoBroker;
  let cloudPassword: string;
  const clients: MqttClient[] = [];
  const PASS = { 'pi-1': 'password-of-pi-1-0123', 'pi-2': 'password-of-pi-2-0123' };

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'apprentice-agent-acl-'));
    registry = Registry.open(path.join(dir, 'registry.db'));
    for (const [id, pw] of Object.entries(PASS)) registry.db.insert(devices).values({ id, groups: [], credentialHash: hashPassword(pw) }).run();
    await writeBrokerAuth({ registry, outDir: path.join(dir, 'auth'), cloudPasswordFile: path.join(dir, 'cloud-password') });
    cloudPassword = readFileSync(path.join(dir, 'cloud-password'), 'utf8').trim();
    broker = await startMosquitto({
      dir: path.join(dir, 'broker'),
      fullConfig: ({ port }) =>
        ['per_listener_settings false', 'allow_anonymous false', `password_file ${path.join(dir, 'auth', 'passwd')}`, `acl_file ${path.join(dir, 'auth', 'acl')}`, `listener ${port} 127.0.0.1`, 'log_dest stderr', ''].join('\n'),
    });
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true)));
    await broker?.stop();
    registry?.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  const connect = async (username: string, password: string, clientId = username): Promise<MqttClient> => {
    const c = await mqtt.connectAsync(broker.url, { clientId, username, password, reconnectPeriod: 0, connectTimeout: 3000, protocolVersion: 4 });
    clients.push(c);
    return c;
  };

  it("pi-1 reads its own retained agent release and not pi-2's; its forged agent release reaches nobody", async () => {
    expect(readFileSync(path.join(dir, 'auth', 'acl'), 'utf8')).toMatch(/devices\/%u\/agent/);
    const cloud = await connect('apprentice-cloud', cloudPassword, 'cloud-agent-acl');
    await cloud.publishAsync(topics.agent('pi-2'), 'agent-for-2', { qos: 1, retain: true });
    await cloud.publishAsync(topics.agent('pi-1'), 'agent-for-1', { qos: 1, retain: true });
    const a = await connect('pi-1', PASS['pi-1']);
    const got: { topic: string; payload: string }[] = [];
    a.on('message', (topic, p) => got.push({ topic, payload: p.toString() }));
    // Mosquitto grants the SUBACK and filters delivery by the ACL: only the positive control may arrive.
    await a.subscribeAsync([topics.agent('pi-2'), 'apprentice/v1/devices/+/agent', topics.agent('pi-1')], { qos: 1 });
    await waitFor(() => got.some((m) => m.payload === 'agent-for-1'), 3000, { message: "pi-1's own agent release" });
    await cloud.publishAsync(topics.agent('pi-2'), 'agent-for-2-v2', { qos: 1, retain: true });
    await sleep(200);
    expect(got.filter((m) => m.payload.startsWith('agent-for-2'))).toEqual([]);
    expect(new Set(got.map((m) => m.topic))).toEqual(new Set([topics.agent('pi-1')]));

    // pi-1 cannot write its own agent topic: the retained release stays the cloud's.
    await a.publishAsync(topics.agent('pi-1'), 'forged', { qos: 1, retain: true }).catch(() => undefined);
    const watcher = await connect('apprentice-cloud', cloudPassword, 'cloud-agent-watch');
    const seen: string[] = [];
    watcher.on('message', (_t, p) => seen.push(p.toString()));
    await watcher.subscribeAsync(topics.agent('pi-1'), { qos: 1 });
    await waitFor(() => seen.length >= 1, 3000, { message: 'the retained agent release' });
    await sleep(150);
    expect(seen).toEqual(['agent-for-1']);
  });
});
