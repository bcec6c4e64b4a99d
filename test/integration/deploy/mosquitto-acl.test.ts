/**
 * Runs deploy/mosquitto/mosquitto.conf + acl on a real Mosquitto (only paths and ports substituted) and
 * proves the isolation between devices that the fleet relies on.
 *
 * Mosquitto drops an unauthorised PUBLISH silently on MQTT 3.1.1 (it still sends the PUBACK), so a
 * denial is proven by absence: the forbidden messages are sent first, then a permitted control message
 * on the same connection; once the control has arrived, anything sent before it would have too.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { topics } from '../../../shared/protocol/topics.js';
import {
  findExecutable,
  freePort,
  mosquittoAvailable,
  mosquittoRequired,
  missingMosquittoReason,
  sleep,
  startMosquitto,
  waitFor,
  type MosquittoBroker,
} from '../../helpers/broker.js';

const DEPLOY_DIR = fileURLToPath(new URL('../../../deploy/mosquitto/', import.meta.url));
const CLOUD = { username: 'apprentice-cloud', password: 'cloud-secret' };
const DEV_A = { username: 'dev-a', password: 'secret-a' };
const DEV_B = { username: 'dev-b', password: 'secret-b' };
const SHA = 'ab'.repeat(32);
/** Extra wait after a positive control arrived, before asserting absence. */
const ABSENCE_MS = 150;

function skipReason(): string | undefined {
  if (!mosquittoAvailable()) return missingMosquittoReason();
  if (!findExecutable('mosquitto_passwd')) return 'mosquitto_passwd not found (Debian package `mosquitto`)';
  if (!findExecutable('openssl')) return 'openssl not found (needed to make test TLS certificates)';
  return undefined;
}
const reason = skipReason();
if (reason && !mosquittoRequired()) console.warn(`[mosquitto-acl] skipping: ${reason}`);

/** Throws (naming the edit) unless `from` occurs exactly once: the test must notice the conf drifting. */
function replaceOnce(text: string, from: string | RegExp, to: string): string {
  const re = typeof from === 'string' ? new RegExp(from.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'gm') : from;
  const n = text.match(new RegExp(re.source, 'gm'))?.length ?? 0;
  if (n !== 1) throw new Error(`deploy/mosquitto/mosquitto.conf: expected exactly one "${re.source}", found ${n}`);
  return text.replace(new RegExp(re.source, 'm'), to);
}

function makeCerts(dir: string): void {
  const ossl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ossl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=apprentice-test-ca',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  ossl('req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost');
  writeFileSync(path.join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  ossl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt',
    '-days', '2', '-extfile', 'server.ext');
}

describe.skipIf(reason !== undefined && !mosquittoRequired())('deploy/mosquitto: auth, ACL and TLS on a real Mosquitto', () => {
  let dir: string;
  let broker: MosquittoBroker;
  let tlsPort: number;
  let ca: Buffer;
  const clients: MqttClient[] = [];

  beforeAll(async () => {
    if (reason) throw new Error(`${reason} (APPRENTICE_REQUIRE_MOSQUITTO=1)`);
    dir = mkdtempSync(path.join(tmpdir(), 'apprentice-acl-'));
    mkdirSync(path.join(dir, 'certs'));
    mkdirSync(path.join(dir, 'data'));
    makeCerts(path.join(dir, 'certs'));
    ca = readFileSync(path.join(dir, 'certs', 'ca.crt'));
    const passwd = path.join(dir, 'passwd');
    const mp = findExecutable('mosquitto_passwd')!;
    execFileSync(mp, ['-b', '-c', passwd, CLOUD.username, CLOUD.password]);
    for (const u of [DEV_A, DEV_B]) execFileSync(mp, ['-b', passwd, u.username, u.password]);
    writeFileSync(path.join(dir, 'acl'), readFileSync(path.join(DEPLOY_DIR, 'acl')));
    tlsPort = await freePort();

    const prod = readFileSync(path.join(DEPLOY_DIR, 'mosquitto.conf'), 'utf8');
    broker = await startMosquitto({
      dir,
      fullConfig: ({ port }) => {
        let c = prod;
        c = replaceOnce(c, '/etc/mosquitto/apprentice/passwd', path.join(dir, 'passwd'));
        c = replaceOnce(c, '/etc/mosquitto/apprentice/acl', path.join(dir, 'acl'));
        c = replaceOnce(c, '/var/lib/mosquitto/', `${path.join(dir, 'data')}/`);
        for (const f of ['ca.crt', 'server.crt', 'server.key']) c = replaceOnce(c, `/etc/mosquitto/certs/${f}`, path.join(dir, 'certs', f));
        // Loopback only in the test; production listens on all interfaces.
        c = replaceOnce(c, /^listener 8883$/, `listener ${tlsPort} 127.0.0.1`);
        c = replaceOnce(c, /^listener 1883 127\.0\.0\.1$/, `listener ${port} 127.0.0.1`);
        return c;
      },
    });
  });

  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
  });

  afterAll(async () => {
    await broker?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function connect(creds: { username?: string; password?: string }, opts: IClientOptions & { tls?: boolean } = {}) {
    const { tls, ...rest } = opts;
    const url = tls ? `mqtts://127.0.0.1:${tlsPort}` : broker.url;
    const c = await mqtt.connectAsync(url, {
      protocolVersion: 4,
      reconnectPeriod: 0,
      connectTimeout: 3_000,
      clientId: `${creds.username ?? 'anon'}-${Math.random().toString(16).slice(2, 10)}`,
      ...creds,
      ...(tls ? { ca } : {}),
      ...rest,
    });
    clients.push(c);
    return c;
  }

  function record(c: MqttClient): Array<{ topic: string; payload: string }> {
    const got: Array<{ topic: string; payload: string }> = [];
    c.on('message', (topic, payload) => got.push({ topic, payload: payload.toString() }));
    return got;
  }

  async function connackError(creds: { username?: string; password?: string }): Promise<{ code?: number; message: string }> {
    const err = await connect(creds).then(
      () => undefined,
      (e: unknown) => e as Error & { code?: number },
    );
    expect(err, 'connection should have been refused').toBeDefined();
    return { code: err!.code, message: err!.message };
  }

  it('accepts the cloud and a device over TLS with the CA, and refuses a client that does not trust it', async () => {
    const cloud = await connect(CLOUD, { tls: true });
    const dev = await connect(DEV_A, { tls: true });
    expect(cloud.connected && dev.connected).toBe(true);

    const got = record(cloud);
    await cloud.subscribeAsync(topics.status(DEV_A.username), { qos: 1 });
    await dev.publishAsync(topics.status(DEV_A.username), 'online-over-tls', { qos: 1 });
    await waitFor(() => got.some((m) => m.payload === 'online-over-tls'), 3_000, { message: 'status over TLS' });

    // Default trust store only: the test CA is unknown, so the TLS handshake fails before MQTT.
    const err = await mqtt
      .connectAsync(`mqtts://127.0.0.1:${tlsPort}`, { ...DEV_A, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 3_000 })
      .then((c) => (clients.push(c), undefined), (e: unknown) => e as Error & { code?: string });
    expect(err?.code ?? err?.message).toMatch(/SELF_SIGNED|UNABLE_TO_VERIFY|unable to verify|self.signed/i);
  });

  it('refuses anonymous clients and wrong passwords (CONNACK "not authorized")', async () => {
    // MQTT 3.1.1 CONNACK return codes [MQTT-3.2.2.3]: 4 = bad user name or password, 5 = not authorized.
    // Mosquitto 2.0 answers 5 for both; a newer one may answer 4 for a bad password.
    expect((await connackError({})).code).toBe(5);
    expect([4, 5]).toContain((await connackError({ username: DEV_A.username, password: 'wrong' })).code);
    expect([4, 5]).toContain((await connackError({ username: 'nobody', password: 'x' })).code);
    // Device A's password is not device B's.
    expect([4, 5]).toContain((await connackError({ username: DEV_B.username, password: DEV_A.password })).code);
  });

  it("device A cannot publish on B's topics, its own desired, or artifacts; its own topics work", async () => {
    const cloud = await connect(CLOUD);
    const got = record(cloud);
    await cloud.subscribeAsync('apprentice/v1/#', { qos: 1 });
    const a = await connect(DEV_A);

    const forbidden = [
      topics.status(DEV_B.username),
      topics.telemetry(DEV_B.username),
      topics.events(DEV_B.username),
      topics.examples(DEV_B.username),
      topics.desired(DEV_B.username),
      topics.desired(DEV_A.username),
      topics.artifactChunk(SHA, 0),
    ];
    for (const t of forbidden) await a.publishAsync(t, 'forged', { qos: 1 }); // PUBACKed, then dropped
    const own = (['status', 'telemetry', 'events', 'examples'] as const).map((k) => topics.device(DEV_A.username, k));
    for (const t of own) await a.publishAsync(t, 'mine', { qos: 1 });

    await waitFor(() => own.every((t) => got.some((m) => m.topic === t)), 3_000, { message: "A's own messages" });
    await sleep(ABSENCE_MS);
    expect(got.filter((m) => m.payload === 'forged')).toEqual([]);
    expect(got.map((m) => m.topic).sort()).toEqual([...own].sort());
  });

  it("device A cannot read B's desired manifest (retained), while B can and A reads its own and artifacts", async () => {
    const cloud = await connect(CLOUD);
    await cloud.publishAsync(topics.desired(DEV_B.username), 'manifest-for-b', { qos: 1, retain: true });
    await cloud.publishAsync(topics.desired(DEV_A.username), 'manifest-for-a', { qos: 1, retain: true });
    await cloud.publishAsync(topics.artifactChunk(SHA, 0), 'chunk-0', { qos: 1, retain: true });
    await cloud.publishAsync(topics.status(DEV_B.username), 'b-online', { qos: 1, retain: true });

    const a = await connect(DEV_A);
    const gotA = record(a);
    // The exact topic, a wildcard over all devices, and everything: none may leak B's state.
    const granted = await a.subscribeAsync(
      [topics.desired(DEV_B.username), 'apprentice/v1/devices/+/desired', 'apprentice/v1/#'],
      { qos: 1 },
    );
    expect(granted).toHaveLength(3);

    const b = await connect(DEV_B);
    const gotB = record(b);
    await b.subscribeAsync(topics.desired(DEV_B.username), { qos: 1 });
    await waitFor(() => gotB.some((m) => m.payload === 'manifest-for-b'), 3_000, { message: 'B receives its desired' });

    // Positive controls for A: its own desired and the artifact chunk arrive...
    await waitFor(
      () => gotA.some((m) => m.payload === 'manifest-for-a') && gotA.some((m) => m.payload === 'chunk-0'),
      3_000,
      { message: 'A receives its own desired and the artifact' },
    );
    // ...and a live (non-retained) update to B's desired published after them does not.
    await cloud.publishAsync(topics.desired(DEV_B.username), 'manifest-for-b-v2', { qos: 1, retain: true });
    await cloud.publishAsync(topics.desired(DEV_A.username), 'manifest-for-a-v2', { qos: 1, retain: true });
    await waitFor(() => gotA.some((m) => m.payload === 'manifest-for-a-v2'), 3_000, { message: "A's second desired" });
    await sleep(ABSENCE_MS);
    expect(gotA.filter((m) => m.topic.includes(`/${DEV_B.username}/`))).toEqual([]);
    expect(new Set(gotA.map((m) => m.topic))).toEqual(new Set([topics.desired(DEV_A.username), topics.artifactChunk(SHA, 0)]));
  });

  it("a hijack fails: device A connecting under B's client id (or the cloud's) gets its own; B and the cloud keep their sessions", async () => {
    // use_username_as_clientid: the broker replaces whatever client id A sends with its username.
    const cloud = await connect(CLOUD, { clientId: CLOUD.username });
    const b = await connect(DEV_B, { clientId: DEV_B.username });
    const closed: string[] = [];
    cloud.on('close', () => closed.push('cloud'));
    b.on('close', () => closed.push('dev-b'));
    const gotB = record(b);
    await b.subscribeAsync(topics.desired(DEV_B.username), { qos: 1 });

    const a1 = await connect(DEV_A, { clientId: DEV_B.username });
    const a2 = await connect(DEV_A, { clientId: CLOUD.username });
    await a2.publishAsync(topics.telemetry(DEV_A.username), 'a', { qos: 1 });

    await cloud.publishAsync(topics.desired(DEV_B.username), 'still-b', { qos: 1 });
    await waitFor(() => gotB.some((m) => m.payload === 'still-b'), 3_000, { message: 'B still receives' });
    // a2 took over a1 (both are dev-a now): the only session A can ever displace is its own.
    await waitFor(() => !a1.connected, 3_000, { message: "A's second connection replaces its first" });
    expect(closed).toEqual([]);
    expect(b.connected && cloud.connected && a2.connected).toBe(true);
  });

  it('lets the cloud consume device topics through a $share subscription', async () => {
    const cloud = await connect(CLOUD);
    const got = record(cloud);
    await cloud.subscribeAsync(topics.allDevices('events', 'cloud'), { qos: 1 });
    const b = await connect(DEV_B);
    await b.publishAsync(topics.events(DEV_B.username), 'installed', { qos: 1 });
    await waitFor(() => got.some((m) => m.topic === topics.events(DEV_B.username)), 3_000, { message: 'shared-subscription delivery' });
  });

  // Last: it removes dev-b from the password file.
  it('revoking a device: a regenerated password file and SIGHUP close its live session, and it cannot come back', async () => {
    const b = await connect(DEV_B);
    const gone = new Promise<void>((r) => b.once('close', () => r()));
    const passwd = path.join(dir, 'passwd');
    const kept = readFileSync(passwd, 'utf8').split('\n').filter((l) => !l.startsWith(`${DEV_B.username}:`));
    writeFileSync(passwd, kept.join('\n'));
    await broker.kill('SIGHUP');
    await gone;
    expect([4, 5]).toContain((await connackError(DEV_B)).code);
  });
});
