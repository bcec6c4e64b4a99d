/**
 * Issue 10: revoking a device with Mosquitto. reloadMosquittoAuth rewrites the password file from the
 * registry and SIGHUPs a private mosquitto: the revoked device's live session ends and it cannot log in
 * again; another device's session survives.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { eq } from 'drizzle-orm';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeBrokerAuth } from '../../../cloud/provision/broker-auth.js';
import { hashPassword } from '../../../cloud/provision/passwd.js';
import { reloadMosquittoAuth } from '../../../cloud/provision/reload.js';
import { Registry } from '../../../cloud/registry/db.js';
import { devices } from '../../../cloud/registry/schema.js';
import { skipWithoutMosquitto, waitFor } from '../../helpers/broker.js';
import { startMosquitto, type MosquittoBroker } from '../../helpers/mosquitto.js';

describe.skipIf(skipWithoutMosquitto())('revoke with Mosquitto: password file + SIGHUP', () => {
  let dir: string;
  let registry: Registry;
  let broker: MosquittoBroker;
  const clients: MqttClient[] = [];
  const PASS = { 'pi-1': 'password-of-pi-1-0123', 'pi-2': 'password-of-pi-2-0123' };

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'apprentice-revoke-'));
    registry = Registry.open(path.join(dir, 'registry.db'));
    for (const [id, pw] of Object.entries(PASS)) registry.db.insert(devices).values({ id, groups: [], credentialHash: hashPassword(pw) }).run();
    await writeBrokerAuth({ registry, outDir: path.join(dir, 'auth'), cloudPasswordFile: path.join(dir, 'cloud-password') });
    broker = await startMosquitto({
      dir: path.join(dir, 'broker'),
      fullConfig: ({ port }) =>
        [
          'per_listener_settings false',
          'allow_anonymous false',
          `password_file ${path.join(dir, 'auth', 'passwd')}`,
          `acl_file ${path.join(dir, 'auth', 'acl')}`,
          `listener ${port} 127.0.0.1`,
          'log_dest stderr',
          'log_type all',
          '',
        ].join('\n'),
    });
    writeFileSync(path.join(dir, 'mosquitto.pid'), `${broker.pid}\n`);
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true)));
    await broker?.stop();
    registry?.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  const connect = async (id: keyof typeof PASS): Promise<MqttClient> => {
    const c = await mqtt.connectAsync(broker.url, { clientId: id, username: id, password: PASS[id], reconnectPeriod: 0, connectTimeout: 3000, protocolVersion: 4 });
    clients.push(c);
    return c;
  };

  it('ends the revoked device\'s session and refuses its next login; others stay', async () => {
    const a = await connect('pi-1');
    const b = await connect('pi-2');
    let aClosed = false;
    let bClosed = false;
    a.on('close', () => (aClosed = true));
    b.on('close', () => (bClosed = true));

    registry.db.update(devices).set({ revoked: true }).where(eq(devices.id, 'pi-1')).run();
    const r = await reloadMosquittoAuth(registry, { authDir: path.join(dir, 'auth'), pidFile: path.join(dir, 'mosquitto.pid') });
    expect(r).toMatchObject({ devices: 1, pid: broker.pid });

    await waitFor(() => aClosed, 5000).catch(() => {
      throw new Error(`pi-1 still connected after SIGHUP; mosquitto said:\n${broker.logs()}`);
    });
    await expect(connect('pi-1')).rejects.toThrow(/Not authorized|Bad username or password/i);
    // pi-2 is untouched: still connected and able to publish its status.
    expect(bClosed).toBe(false);
    await b.publishAsync('apprentice/v1/devices/pi-2/status', '{}', { qos: 1 });
    expect(b.connected).toBe(true);
  });

  it('fails loudly on a missing or bogus PID file', async () => {
    await expect(reloadMosquittoAuth(registry, { authDir: path.join(dir, 'auth'), pidFile: path.join(dir, 'nope.pid') })).rejects.toThrow(/ENOENT/);
    writeFileSync(path.join(dir, 'bad.pid'), 'mosquitto\n');
    await expect(reloadMosquittoAuth(registry, { authDir: path.join(dir, 'auth'), pidFile: path.join(dir, 'bad.pid') })).rejects.toThrow(/not a PID/);
  });
});
