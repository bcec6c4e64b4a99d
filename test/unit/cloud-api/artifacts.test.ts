/**
 * Issue 10 item 8: `GET /v1/artifacts/{sha256}` — content-addressed, Range, device HTTP Basic (MQTT
 * username and password checked against the registry) or the admin token; credentials over plain HTTP
 * refused except from loopback or a trusted proxy saying `X-Forwarded-Proto: https`.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCloudServer, type CloudServer } from '../../../cloud/api/server.js';
import { hashPassword } from '../../../cloud/provision/passwd.js';
import { mayCarryCredentials } from '../../../edge/updates/source-http.js';
import { call, harness, json, seedDevice, seedModel, seedRelease, TOKEN, type Harness } from './helpers.js';

const basic = (user: string, pass: string): string => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;

describe('/v1/artifacts/{sha256}', () => {
  let h: Harness;
  let peer: string | undefined;
  let sha256: string;
  const bytes = randomBytes(5000);
  beforeAll(() => {
    peer = '127.0.0.1';
    h = harness({ artifacts: { trustedProxies: ['10.0.0.9'], clientAddress: () => peer } });
    seedModel(h);
    ({ sha256 } = seedRelease(h, { seq: 1, bytes }));
    seedDevice(h, 'pi-1', { credentialHash: hashPassword('s3cret') });
    seedDevice(h, 'pi-gone', { credentialHash: hashPassword('s3cret'), revoked: true });
  });
  afterAll(() => h.close());
  const get = (path: string, headers: Record<string, string>) => h.app.request(path, { headers });

  it('serves a device with its MQTT credentials, and the admin token, with ranges', async () => {
    const whole = await get(`/v1/artifacts/${sha256}`, { authorization: basic('pi-1', 's3cret') });
    expect(whole.status).toBe(200);
    expect(whole.headers.get('etag')).toBe(`"${sha256}"`);
    expect(Buffer.from(await whole.arrayBuffer()).equals(bytes)).toBe(true);
    const part = await get(`/v1/artifacts/${sha256}`, { authorization: basic('pi-1', 's3cret'), range: 'bytes=100-199' });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe('bytes 100-199/5000');
    expect(Buffer.from(await part.arrayBuffer()).equals(bytes.subarray(100, 200))).toBe(true);
    expect((await get(`/v1/artifacts/${sha256}`, { authorization: `Bearer ${TOKEN}` })).status).toBe(200);
  });

  it('refuses missing, malformed and wrong credentials with 401 and a JSON body', async () => {
    const cases: [Record<string, string>, RegExp][] = [
      [{}, /missing credentials/],
      [{ authorization: 'Digest abc' }, /malformed Authorization header/],
      [{ authorization: 'Basic !!!' }, /malformed Authorization header/],
      [{ authorization: `Basic ${Buffer.from('no-colon').toString('base64')}` }, /malformed Basic credentials/],
      [{ authorization: `Basic ${Buffer.from(':pw').toString('base64')}` }, /malformed Basic credentials/],
      [{ authorization: basic('pi-1', 'wrong') }, /invalid device credentials/],
      [{ authorization: basic('pi-gone', 's3cret') }, /invalid device credentials/],
      [{ authorization: basic('nobody', 's3cret') }, /invalid device credentials/],
      [{ authorization: basic('x'.repeat(5000), 's3cret') }, /invalid device credentials/],
      [{ authorization: 'Bearer not-the-token-0123456789' }, /invalid token/],
    ];
    for (const [headers, message] of cases) {
      const res = await get(`/v1/artifacts/${sha256}`, headers);
      expect(res.status, JSON.stringify(headers)).toBe(401);
      expect(res.headers.get('www-authenticate')).toMatch(/^Basic realm="apprentice"/);
      expect((await json(res)).error.message).toMatch(message);
    }
  });

  it('refuses a bad sha256 (400), an unknown one (404) and a bad range (416)', async () => {
    const auth = { authorization: basic('pi-1', 's3cret') };
    for (const bad of [sha256.toUpperCase(), sha256.slice(1), `${sha256}0`, 'x'.repeat(64), '..%2F..%2Fregistry.db']) {
      const res = await get(`/v1/artifacts/${bad}`, auth);
      expect(res.status, bad).toBe(400);
      expect((await json(res)).error.field).toBe('sha256');
    }
    expect((await get(`/v1/artifacts/${'0'.repeat(64)}`, auth)).status).toBe(404);
    for (const range of ['bytes=6000-', 'bytes=abc', 'bytes=-0', 'bytes=9-3']) {
      const res = await get(`/v1/artifacts/${sha256}`, { ...auth, range });
      expect(res.status, range).toBe(416);
      expect(res.headers.get('content-range')).toBe('bytes */5000');
    }
  });

  it('refuses credentials over plain HTTP except from loopback or a trusted proxy forwarding https', async () => {
    const auth = { authorization: basic('pi-1', 's3cret') };
    try {
      peer = '192.168.1.20';
      const res = await get(`/v1/artifacts/${sha256}`, auth);
      expect(res.status).toBe(403);
      expect((await json(res)).error.code).toBe('insecure_transport');
      // An untrusted peer cannot claim https.
      expect((await get(`/v1/artifacts/${sha256}`, { ...auth, 'x-forwarded-proto': 'https' })).status).toBe(403);
      peer = '10.0.0.9';
      expect((await get(`/v1/artifacts/${sha256}`, { ...auth, 'x-forwarded-proto': 'https' })).status).toBe(200);
      expect((await get(`/v1/artifacts/${sha256}`, { ...auth, 'x-forwarded-proto': 'http' })).status).toBe(403);
      expect((await get(`/v1/artifacts/${sha256}`, auth)).status).toBe(403);
      peer = '::ffff:10.0.0.9';
      expect((await get(`/v1/artifacts/${sha256}`, { ...auth, 'x-forwarded-proto': 'https, http' })).status).toBe(200);
      peer = undefined; // in-process, no socket: not loopback
      expect((await get(`/v1/artifacts/${sha256}`, auth)).status).toBe(403);
    } finally {
      peer = '127.0.0.1';
    }
  });

  it('over a real loopback socket, and the edge sends credentials only over https or to loopback', async () => {
    const real = harness();
    seedModel(real);
    const { sha256: sha } = seedRelease(real, { seq: 1, bytes });
    seedDevice(real, 'pi-1', { credentialHash: hashPassword('s3cret') });
    const server: CloudServer = await startCloudServer({ app: real.app, port: 0 });
    try {
      const res = await fetch(`${server.url}/v1/artifacts/${sha}`, { headers: { authorization: basic('pi-1', 's3cret') } });
      expect(res.status).toBe(200);
      expect(Buffer.from(await res.arrayBuffer()).equals(bytes)).toBe(true);
      // The admin API's other routes still want the bearer token.
      expect((await fetch(`${server.url}/v1/devices`, { headers: { authorization: basic('pi-1', 's3cret') } })).status).toBe(401);
    } finally {
      await server.stop();
      real.close();
    }
    expect(['https://cloud.example/v1/artifacts/x', 'http://127.0.0.1:8787/a', 'http://localhost/a', 'http://[::1]:1/a'].map(mayCarryCredentials)).toEqual([true, true, true, true]);
    expect(['http://cloud.example/a', 'ftp://x/a', 'not a url'].map(mayCarryCredentials)).toEqual([false, false, false]);
  });
});
