/**
 * Garbage over the real socket: 2000 malformed requests against a running daemon process. Every answer is
 * a 4xx with the API's JSON error shape, and the daemon still serves afterwards. (The API's own fuzz test
 * covers many more bodies through `app.request()`; this one checks the socket, the body limit and the
 * process.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSigningKey } from '../../../shared/manifest/index.js';
import { makeRelease, publishRelease } from '../../fixtures/edge-release.js';
import { sampleInputs, seededRandom } from '../../fixtures/onnx-models.js';
import { startAedes, type TestBroker } from '../../helpers/broker.js';
import { Cloud, DaemonProcess, edgeConfigInput, newDeviceId, predict, tempDir, writeConfig } from './harness.js';

const REQUESTS = 2000;
const CONCURRENCY = 8;
const MAX_BODY = 64 * 1024;

const rand = seededRandom(777);
const int = (n: number) => Math.floor(rand() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
const junk = (n: number) => Buffer.from(Array.from({ length: n }, () => int(256)));
const str = (n: number) => Array.from({ length: n }, () => String.fromCharCode(32 + int(95))).join('');
const row = (n = 784) => Array.from({ length: n }, () => rand());

function randomJson(depth = 0): unknown {
  switch (depth > 2 ? int(4) : int(6)) {
    case 0: return rand() * 1e9 - 5e8;
    case 1: return str(int(12));
    case 2: return pick([true, false, null]);
    case 3: return int(100);
    case 4: return Array.from({ length: int(4) }, () => randomJson(depth + 1));
    default: return Object.fromEntries(Array.from({ length: int(4) }, () => [str(5), randomJson(depth + 1)]));
  }
}

interface FuzzRequest {
  method: string;
  path: string;
  body?: string | Buffer;
  type?: string;
}

function fuzzRequest(): FuzzRequest {
  const json = (v: unknown, path = '/v1/predict'): FuzzRequest => ({ method: 'POST', path, body: JSON.stringify(v), type: 'application/json' });
  switch (int(14)) {
    case 0: return { method: 'POST', path: '/v1/predict', body: junk(1 + int(2000)), type: 'application/json' };
    case 1: { const t = JSON.stringify({ input: row() }); return { method: 'POST', path: '/v1/predict', body: t.slice(0, int(t.length - 1)), type: 'application/json' }; }
    case 2: return json(randomJson());
    case 3: return { method: 'POST', path: '/v1/predict', body: JSON.stringify({ input: row() }), type: pick(['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) };
    case 4: return { method: 'POST', path: '/v1/predict', body: Buffer.alloc(MAX_BODY + 1 + int(MAX_BODY), 0x20), type: 'application/json' };
    case 5: { let n = int(1600); if (n === 784) n = 783; return json({ input: row(n) }); }
    case 6: { const r: unknown[] = row(); r[int(784)] = pick(['1', null, {}, [], 1e39, -1e39, true]); return json({ input: r }); }
    case 7: return { method: pick(['GET', 'POST', 'DELETE', 'PATCH']), path: `/${str(1 + int(10)).replace(/[?#%\s]/g, 'x')}` };
    case 8: return { method: pick(['GET', 'PUT', 'DELETE', 'PATCH']), path: pick(['/v1/predict', '/v1/feedback']) };
    case 9: return json(pick([{ id: str(10), label: 1 }, { id: crypto.randomUUID(), label: 3 }, { id: crypto.randomUUID(), label: -1 }, { label: 'x' }, randomJson()]), '/v1/feedback');
    case 10: return json({ input_b64: pick([str(int(100)), Buffer.from(junk(int(5000))).toString('base64')]), encoding: pick(['float32', 'uint8', 'int8']), count: pick([0, 1, 2, -1, 1000]) });
    case 11: return { method: 'POST', path: '/v1/predict', body: '['.repeat(5_000 + int(20_000)), type: 'application/json' };
    case 12: return json({ inputs: Array.from({ length: 1 + int(3) }, () => (rand() < 0.5 ? row(int(900)) : randomJson())) });
    default: return { method: 'POST', path: '/v1/predict', body: Buffer.concat([Buffer.from('{"input":"'), junk(50), Buffer.from('"}')]), type: 'application/json; charset=utf-8' };
  }
}

describe('local API fuzz over the socket of a daemon process', () => {
  let broker: TestBroker;
  let daemon: DaemonProcess;
  let cleanup: () => Promise<void>;
  let cloud: Cloud;

  beforeAll(async () => {
    broker = await startAedes();
    const t = await tempDir();
    cleanup = t.cleanup;
    const deviceId = newDeviceId();
    const key = generateSigningKey();
    const path = await writeConfig(t.dir, edgeConfigInput({ deviceId, mqttUrl: broker.url, dataDir: `${t.dir}/data`, key, api: { maxBodyBytes: MAX_BODY } }));
    daemon = DaemonProcess.spawn(path);
    await daemon.started();
    cloud = await Cloud.connect(broker.url, deviceId);
    await publishRelease(cloud.client, deviceId, makeRelease(key, { release: 1, seed: 81 }));
    await cloud.waitEvent((e) => e.type === 'installed');
  });
  afterAll(async () => {
    await daemon?.kill('SIGKILL');
    await cloud?.close();
    await broker?.stop();
    await cleanup?.();
  });

  it(`answers ${REQUESTS} malformed requests with 4xx JSON errors and stays up`, async () => {
    const api = daemon.apiUrl!;
    const statuses = new Map<number, number>();
    const bad: string[] = [];
    let next = 0;
    const worker = async () => {
      while (next < REQUESTS) {
        next++;
        const req = fuzzRequest();
        let res: Response;
        try {
          res = await fetch(api + req.path, { method: req.method, body: req.body, headers: req.type ? { 'content-type': req.type } : {} });
        } catch (err) {
          // The server may close a connection on an oversized body it refused; the answer was still read below when sent.
          bad.push(`${req.method} ${req.path}: ${(err as Error).message}`);
          continue;
        }
        const text = await res.text();
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        let code: unknown;
        try {
          code = (JSON.parse(text) as { error?: { code?: unknown } }).error?.code;
        } catch {
          code = undefined;
        }
        if (res.status < 400 || res.status >= 500 || typeof code !== 'string' || !res.headers.get('content-type')?.includes('application/json')) {
          bad.push(`${req.method} ${req.path} → ${res.status} ${text.slice(0, 120)}`);
        }
      }
    };
    const t0 = Date.now();
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    console.log(`[edge fuzz] ${REQUESTS} requests in ${Date.now() - t0} ms; statuses ${JSON.stringify(Object.fromEntries(statuses))}`);
    expect(bad.slice(0, 10)).toEqual([]);
    expect(daemon.child.exitCode).toBeNull();
    expect((await fetch(`${api}/healthz`)).status).toBe(200);
    const ok = await predict(api, Array.from(sampleInputs(1, 784, 5)));
    expect(ok.status).toBe(200);
    expect(ok.body.release).toBe(1);
  });
});
