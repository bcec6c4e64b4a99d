import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { aclText, writeBrokerAuth } from '../../../cloud/provision/broker-auth.js';
import { formatPasswordFile, hashPassword, parsePasswordFile, verifyPassword } from '../../../cloud/provision/passwd.js';
import { findExecutable, requireMosquittoOrSkip, startMosquitto, type MosquittoBroker } from '../../helpers/broker.js';
import { call, harness, json, type Harness } from '../cloud-api/helpers.js';
import { topics } from '../../../shared/protocol/topics.js';
import { sleep, waitFor } from '../../helpers/net.js';

const ACL_TEMPLATE = fileURLToPath(new URL('../../../deploy/mosquitto/acl', import.meta.url));
const rules = (text: string) => text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
const mode = (p: string) => statSync(p).mode & 0o777;

describe('Mosquitto $7$ password hashes', () => {
  it('writes $7$ PBKDF2-SHA512 hashes (101 iterations, 12-byte salt, 64-byte hash) that verify', () => {
    const h = hashPassword('s3cret');
    const [, type, iter, salt, hash] = h.split('$');
    expect([type, iter]).toEqual(['7', '101']);
    expect(Buffer.from(salt!, 'base64')).toHaveLength(12);
    expect(Buffer.from(hash!, 'base64')).toHaveLength(64);
    expect(verifyPassword('s3cret', h)).toBe(true);
    expect(verifyPassword('s3cret ', h)).toBe(false);
    expect(hashPassword('s3cret')).not.toBe(h);
    expect(verifyPassword('x', 'plain')).toBe(false);
    expect(verifyPassword('x', '$7$$AA==$AA==')).toBe(false);
  });

  it('verifies legacy $6$ (salted SHA-512) hashes', () => {
    const salt = randomBytes(12);
    const legacy = `$6$${salt.toString('base64')}$${createHash('sha512').update('pw').update(salt).digest('base64')}`;
    expect(verifyPassword('pw', legacy)).toBe(true);
    expect(verifyPassword('pX', legacy)).toBe(false);
  });

  it('accepts what mosquitto_passwd writes', (ctx) => {
    const bin = findExecutable('mosquitto_passwd');
    if (!bin) return ctx.skip('mosquitto_passwd not installed');
    const dir = mkdtempSync(join(tmpdir(), 'apprentice-passwd-'));
    try {
      const file = join(dir, 'passwd');
      execFileSync(bin, ['-b', '-c', file, 'alice', 'wonder land']);
      const hash = parsePasswordFile(readFileSync(file, 'utf8')).get('alice')!;
      expect(hash).toMatch(/^\$7\$101\$/);
      expect(verifyPassword('wonder land', hash)).toBe(true);
      expect(verifyPassword('wonderland', hash)).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('formats password files sorted, and refuses bad usernames and hashes', () => {
    const a = hashPassword('a');
    expect(formatPasswordFile([{ username: 'b', hash: a }, { username: 'a', hash: a }])).toBe(`a:${a}\nb:${a}\n`);
    expect(() => formatPasswordFile([{ username: 'x:y', hash: a }])).toThrow(/invalid/);
    expect(() => formatPasswordFile([{ username: 'x', hash: 'plain' }])).toThrow(/not a Mosquitto password hash/);
    expect(() => formatPasswordFile([{ username: 'x', hash: a }, { username: 'x', hash: a }])).toThrow(/duplicate/);
  });
});

describe('writeBrokerAuth', () => {
  let h: Harness;
  let out: string;
  const passwords = new Map<string, string>();
  beforeEach(async () => {
    h = harness();
    out = join(h.dir, 'mosquitto');
    for (const id of ['pi-a', 'pi-b', 'pi-gone']) {
      const bundle = await json(await call(h.app, 'POST', '/v1/devices', { body: { id } }));
      passwords.set(id, bundle.mqtt.password);
    }
    await call(h.app, 'DELETE', '/v1/devices/pi-gone');
  });
  afterEach(() => h.close());

  it('writes passwd (non-revoked devices + cloud user) and the deploy/mosquitto ACL, mode 0640', async () => {
    const pwFile = join(h.dir, 'cloud-password');
    const r = await writeBrokerAuth({ registry: h.registry, outDir: out, cloudPasswordFile: pwFile });
    expect(r).toMatchObject({ devices: 2, cloud: 'generated' });
    expect(mode(pwFile)).toBe(0o600);
    expect(mode(r.passwdPath)).toBe(0o640);
    expect(mode(r.aclPath)).toBe(0o640);
    const users = parsePasswordFile(readFileSync(r.passwdPath, 'utf8'));
    expect([...users.keys()]).toEqual(['apprentice-cloud', 'pi-a', 'pi-b']);
    expect(verifyPassword(passwords.get('pi-a')!, users.get('pi-a')!)).toBe(true);
    expect(verifyPassword(readFileSync(pwFile, 'utf8').trim(), users.get('apprentice-cloud')!)).toBe(true);
    expect(rules(readFileSync(r.aclPath, 'utf8'))).toEqual(rules(readFileSync(ACL_TEMPLATE, 'utf8')));

    // Re-running without a password file keeps the cloud user's line; an existing password file is reused.
    expect((await writeBrokerAuth({ registry: h.registry, outDir: out })).cloud).toBe('kept');
    expect(parsePasswordFile(readFileSync(r.passwdPath, 'utf8')).get('apprentice-cloud')).toBe(users.get('apprentice-cloud'));
    expect((await writeBrokerAuth({ registry: h.registry, outDir: out, cloudPasswordFile: pwFile })).cloud).toBe('password-file');
  });

  it('refuses to write a passwd the cloud could not log in with', async () => {
    await expect(writeBrokerAuth({ registry: h.registry, outDir: join(h.dir, 'empty') })).rejects.toThrow(/no password for the cloud user/);
    await expect(writeBrokerAuth({ registry: h.registry, outDir: out, cloudUser: 'pi-a', cloudPasswordFile: join(h.dir, 'p') })).rejects.toThrow(/cloud user's name/);
  });

  it('custom cloud user in the ACL', () => {
    expect(aclText({ cloudUser: 'cloud-2' })).toContain('\nuser cloud-2\ntopic readwrite apprentice/v1/#\n');
  });
});

describe('a real Mosquitto with the generated files', () => {
  let h: Harness;
  let broker: MosquittoBroker | undefined;
  const passwords = new Map<string, string>();
  let cloudPassword = '';

  beforeAll(async () => {
    h = harness();
    for (const id of ['pi-a', 'pi-gone']) passwords.set(id, (await json(await call(h.app, 'POST', '/v1/devices', { body: { id } }))).mqtt.password);
    await call(h.app, 'DELETE', '/v1/devices/pi-gone');
  });
  afterAll(async () => {
    await broker?.stop();
    h.close();
  });

  async function connects(username: string, password: string): Promise<boolean> {
    try {
      const c = await mqtt.connectAsync(broker!.url, { username, password, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 3_000, clientId: `${username}-${randomBytes(4).toString('hex')}` });
      await c.endAsync(true);
      return true;
    } catch {
      return false;
    }
  }

  it('accepts provisioned devices and the cloud user, refuses revoked devices and wrong passwords', async (ctx) => {
    requireMosquittoOrSkip(ctx);
    const dir = join(h.dir, 'broker');
    const pwFile = join(h.dir, 'cloud-password');
    const r = await writeBrokerAuth({ registry: h.registry, outDir: dir, cloudPasswordFile: pwFile });
    cloudPassword = readFileSync(pwFile, 'utf8').trim();
    broker = await startMosquitto({
      dir,
      fullConfig: ({ port }) =>
        ['per_listener_settings false', 'allow_anonymous false', `password_file ${r.passwdPath}`, `acl_file ${r.aclPath}`, 'persistence false', `listener ${port} 127.0.0.1`, 'log_dest stderr', 'log_type error', ''].join('\n'),
    });
    expect(await connects('pi-a', passwords.get('pi-a')!)).toBe(true);
    expect(await connects('apprentice-cloud', cloudPassword)).toBe(true);
    expect(await connects('pi-a', 'wrong-password')).toBe(false);
    expect(await connects('pi-gone', passwords.get('pi-gone')!)).toBe(false);
  });

  it('with the generated ACL a device reads its own receipts, the key set and the cloud info, and cannot write them', async (ctx) => {
    requireMosquittoOrSkip(ctx);
    expect(broker, 'the broker of the previous test').toBeDefined();
    const opts = { protocolVersion: 4 as const, reconnectPeriod: 0, connectTimeout: 3_000 };
    const cloud = await mqtt.connectAsync(broker!.url, { ...opts, username: 'apprentice-cloud', password: cloudPassword, clientId: `cloud-${randomBytes(4).toString('hex')}` });
    const dev = await mqtt.connectAsync(broker!.url, { ...opts, username: 'pi-a', password: passwords.get('pi-a')!, clientId: `pi-a-${randomBytes(4).toString('hex')}` });
    try {
      await cloud.publishAsync(topics.keyset(), 'keyset-v1', { qos: 1, retain: true });
      await cloud.publishAsync(topics.cloudInfo(), 'info', { qos: 1, retain: true });
      const got: string[] = [];
      dev.on('message', (t, p) => got.push(`${t}=${p.toString()}`));
      // Mosquitto grants a forbidden SUBSCRIBE but delivers nothing on it (deploy/mosquitto/acl).
      await dev.subscribeAsync([topics.receipts('pi-a'), topics.receipts('pi-gone'), topics.keyset(), topics.cloudInfo()], { qos: 1 });
      await cloud.publishAsync(topics.receipts('pi-gone'), 'theirs', { qos: 1 });
      await cloud.publishAsync(topics.receipts('pi-a'), 'mine', { qos: 1 });
      await waitFor(() => got.length >= 3, 3_000, { message: 'own receipt, key set, cloud info' });

      const seen: string[] = [];
      cloud.on('message', (t, p) => p.length && seen.push(`${t}=${p.toString()}`));
      await cloud.subscribeAsync([topics.keyset(), topics.cloudInfo(), topics.receipts('pi-a')], { qos: 1 });
      await waitFor(() => seen.length >= 2, 3_000, { message: 'the retained copies' });
      seen.length = 0;
      // A denied PUBLISH is dropped silently on 3.1.1 (the PUBACK still comes).
      for (const t of [topics.keyset(), topics.cloudInfo(), topics.receipts('pi-a')]) await dev.publishAsync(t, 'forged', { qos: 1, retain: true });
      await cloud.publishAsync(topics.receipts('pi-a'), 'control', { qos: 1 });
      await waitFor(() => seen.length >= 1, 3_000, { message: 'the control receipt' });
      await sleep(200);
      expect(seen).toEqual([`${topics.receipts('pi-a')}=control`]);
      expect(got.filter((g) => !g.endsWith('=control')).sort()).toEqual([`${topics.cloudInfo()}=info`, `${topics.keyset()}=keyset-v1`, `${topics.receipts('pi-a')}=mine`].sort());
    } finally {
      for (const t of [topics.keyset(), topics.cloudInfo()]) await cloud.publishAsync(t, '', { qos: 1, retain: true });
      await dev.endAsync(true);
      await cloud.endAsync(true);
    }
  });
});

