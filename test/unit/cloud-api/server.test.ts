import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCloudServer, type CloudServer } from '../../../cloud/api/server.js';
import { harness, seedModel, seedRelease, TOKEN, type Harness } from './helpers.js';

describe('startCloudServer', () => {
  let h: Harness;
  let server: CloudServer;
  const bytes = randomBytes(300_000);
  beforeAll(async () => {
    h = harness();
    seedModel(h);
    seedRelease(h, { seq: 1, bytes });
    server = await startCloudServer({ app: h.app, port: 0 });
  });
  afterAll(() => h.close());

  it('binds to loopback by default and serves over real HTTP, ranges included', async () => {
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    const auth = { authorization: `Bearer ${TOKEN}` };
    const whole = await fetch(`${server.url}/v1/releases/1/artifact`, { headers: auth });
    expect(whole.headers.get('content-length')).toBe('300000');
    expect(Buffer.from(await whole.arrayBuffer()).equals(bytes)).toBe(true);
    const part = await fetch(`${server.url}/v1/releases/1/artifact`, { headers: { ...auth, range: 'bytes=-1000' } });
    expect(part.status).toBe(206);
    expect(Buffer.from(await part.arrayBuffer()).equals(bytes.subarray(299_000))).toBe(true);
  });

  it('stops gracefully even with keep-alive connections open, and stop() is idempotent', async () => {
    await fetch(`${server.url}/healthz`, { keepalive: true }).then((r) => r.text());
    const t0 = Date.now();
    await Promise.all([server.stop(), server.stop()]);
    expect(Date.now() - t0).toBeLessThan(2_000);
    await expect(fetch(`${server.url}/healthz`)).rejects.toThrow();
  });
});
