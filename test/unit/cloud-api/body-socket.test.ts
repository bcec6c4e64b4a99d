/**
 * Request bodies over a real socket (@hono/node-server), where app.request() tests do not go: a DELETE
 * with no body (curl, fetch: neither Content-Length nor Transfer-Encoding) reaches its route, and a chunked
 * body is counted against api.maxBodyBytes (shared/http limitBody). Both used to answer 500.
 */
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCloudServer, type CloudServer } from '../../../cloud/api/server.js';
import { harness, TOKEN, type Harness } from './helpers.js';

describe('request bodies on a socket', () => {
  let h: Harness;
  let server: CloudServer;
  beforeAll(async () => {
    h = harness({ limits: { maxBodyBytes: 1024 } });
    server = await startCloudServer({ app: h.app, port: 0 });
  });
  afterAll(async () => {
    await server.stop();
    h.close();
  });

  /** One request with node:http (no Content-Length unless given; `chunks` are sent chunked). */
  function send(method: string, path: string, chunks?: string[]): Promise<{ status: number; body: { error?: { code: string } } & Record<string, unknown> }> {
    const u = new URL(server.url);
    return new Promise((resolve, reject) => {
      const headers = { authorization: `Bearer ${TOKEN}`, ...(chunks ? { 'content-type': 'application/json', 'transfer-encoding': 'chunked' } : {}) };
      const req = request({ host: u.hostname, port: u.port, method, path, headers }, (res) => {
        let b = '';
        res.on('data', (d: Buffer) => (b += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(b) as never }));
      });
      req.on('error', reject);
      for (const c of chunks ?? []) req.write(c);
      req.end();
    });
  }

  it('a DELETE without a body reaches its route', async () => {
    expect(await send('POST', '/v1/devices', ['{"id":"pi-9",', '"groups":["lab"]}'])).toMatchObject({ status: 201, body: { deviceId: 'pi-9' } });
    expect(await send('DELETE', '/v1/devices/pi-9')).toMatchObject({ status: 200, body: { id: 'pi-9', revoked: true } });
    expect(await send('DELETE', '/v1/devices/nobody')).toMatchObject({ status: 404, body: { error: { code: 'not_found' } } });
  });

  it('a chunked body is parsed within the limit and refused past it', async () => {
    expect(await send('POST', '/v1/devices', ['{"id":"pi-7",', '"groups":["a"]}'])).toMatchObject({ status: 201 });
    const big = ['{"id":"pi-8","groups":[', Array.from({ length: 200 }, (_, i) => `"group-${i}"`).join(','), ']}'];
    expect(await send('POST', '/v1/devices', big)).toMatchObject({ status: 413, body: { error: { code: 'payload_too_large' } } });
    expect(await send('POST', '/v1/devices', ['{"id": '])).toMatchObject({ status: 400, body: { error: { code: 'invalid_json' } } });
  });
});
