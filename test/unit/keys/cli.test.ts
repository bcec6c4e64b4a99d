import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCloudServer, type CloudServer } from '../../../cloud/api/server.js';
import { KeyStore } from '../../../cloud/keys/store.js';
import { provisionBundleSchema } from '../../../cloud/provision/bundle.js';
import { parsePasswordFile, verifyPassword } from '../../../cloud/provision/passwd.js';
import { freePort } from '../../helpers/broker.js';
import { runCli } from '../../helpers/cli.js';
import { harness, TOKEN, type Harness } from '../cloud-api/helpers.js';

/**
 * The real CLI as a child process (2-3 s per spawn, mostly loading the other commands' modules: keep the
 * count low). Argument-level failures (HTTP 401, bad ids, existing --out) are covered in-process.
 */
describe('apprentice keys / provision / broker-auth', () => {
  let h: Harness;
  let server: CloudServer;
  beforeAll(async () => {
    // harness() puts the registry at DIR/registry.db and the keys at DIR/keys: a cloud data dir.
    h = harness();
    server = await startCloudServer({ app: h.app, port: 0 });
  });
  afterAll(async () => {
    await server.stop();
    h.close();
  });

  const oneErrorLine = (stderr: string) => expect(stderr.trim().split('\n').filter((l) => l.startsWith('error')).length).toBe(1);

  it('keys rotate / list / retire exit 0 and the running API sees the change', async () => {
    const first = h.keys.active().keyId;
    const rotate = await runCli(['keys', 'rotate', '--data-dir', h.dir]);
    expect(rotate.code, rotate.stderr).toBe(0);
    const next = /signing with ([0-9a-f]{16})/.exec(rotate.stdout)![1]!;
    expect(h.keys.active().keyId).toBe(next);

    // Sequential: list must see both keys before the old one is retired.
    const list = await runCli(['keys', 'list', '--data-dir', h.dir, '--json']);
    const retire = await runCli(['keys', 'retire', first, '--data-dir', h.dir]);
    expect(list.code, list.stderr).toBe(0);
    expect(JSON.parse(list.stdout).map((k: { keyId: string }) => k.keyId)).toEqual(expect.arrayContaining([next, first]));
    expect(retire.code, retire.stderr).toBe(0);
    expect(h.keys.trusted().map((k) => k.keyId)).toEqual([next]);
  });

  it('keys list exits 2 on a corrupted key file', async () => {
    const file = join(h.dir, 'keys', `${h.keys.active().keyId}.key.pem`);
    const pem = readFileSync(file, 'utf8');
    writeFileSync(file, 'garbage');
    try {
      const r = await runCli(['keys', 'list', '--data-dir', h.dir]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/\.key\.pem: not a valid Ed25519 private key/);
      oneErrorLine(r.stderr);
    } finally {
      writeFileSync(file, pem);
      chmodSync(file, 0o600);
    }
  });

  it('provision writes the bundle with mode 0600; HTTP and connection errors exit 2 with one line; broker-auth', async () => {
    const out = join(h.dir, 'edge.json');
    const ok = await runCli(['provision', '--cloud', server.url, '--token', TOKEN, '--device', 'pi-cli', '--group', 'lab', '--group', 'eu', '--out', out]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(statSync(out).mode & 0o777).toBe(0o600);
    const bundle = provisionBundleSchema.parse(JSON.parse(readFileSync(out, 'utf8')));
    expect(bundle).toMatchObject({ deviceId: 'pi-cli', trustedKeys: h.keys.trusted() });

    const port = await freePort();
    const [dup, down] = await Promise.all([
      runCli(['provision', '--cloud', server.url, '--token', TOKEN, '--device', 'pi-cli', '--out', join(h.dir, 'dup.json')]),
      runCli(['provision', '--cloud', `http://127.0.0.1:${port}`, '--token', TOKEN, '--device', 'pi-down', '--out', join(h.dir, 'down.json')]),
    ]);
    for (const [r, re] of [[dup, /HTTP 409 .*device_exists: device pi-cli already exists/], [down, /cannot reach http:\/\/127\.0\.0\.1:\d+: ECONNREFUSED/]] as const) {
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(re);
      oneErrorLine(r.stderr);
    }

    // broker-auth from the same data dir: the device's password from the bundle logs in.
    const brokerDir = join(h.dir, 'mosquitto');
    const [auth, noDb] = await Promise.all([
      runCli(['broker-auth', '--data-dir', h.dir, '--out-dir', brokerDir, '--cloud-password-file', join(h.dir, 'cloud-pw')]),
      runCli(['broker-auth', '--db', join(h.dir, 'missing.db'), '--out-dir', brokerDir]),
    ]);
    expect(auth.code, auth.stderr).toBe(0);
    expect(auth.stdout).toMatch(/systemctl reload mosquitto/);
    const users = parsePasswordFile(readFileSync(join(brokerDir, 'passwd'), 'utf8'));
    expect(verifyPassword(bundle.mqtt.password, users.get('pi-cli')!)).toBe(true);
    expect(noDb.code).toBe(2);
    expect(noDb.stderr).toMatch(/missing\.db: registry database not found/);
  });
});
