/**
 * The edge daemon as systemd runs it: a child process (`node --import tsx bin/main.ts edge --config …`),
 * killed with SIGKILL at the worst moments, stopped with SIGTERM, and fed garbage over its HTTP socket.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { generateSigningKey } from '../../../shared/manifest/index.js';
import { clearRetained, expectedProbs, makeRelease, publishChunks, publishDesired, publishRelease, type TestRelease } from '../../fixtures/edge-release.js';
import { sampleInputs } from '../../fixtures/onnx-models.js';
import { brokerMatrix, waitFor, type TestBroker } from '../../helpers/broker.js';
import {
  Cloud,
  DaemonProcess,
  edgeConfigInput,
  newDeviceId,
  predict,
  python3,
  readyz,
  retainedStatus,
  startNotifyListener,
  tempDir,
  writeConfig,
  type NotifyListener,
} from './harness.js';
import { findExecutable, freePort } from '../../helpers/broker.js';

const key = generateSigningKey();
const input = (seed: number): number[] => Array.from(sampleInputs(1, 784, seed));

/** A prediction from `api` must be exactly one of `releases`, with that release's golden output. */
async function expectServes(api: string, releases: TestRelease[], seed: number): Promise<number> {
  const x = input(seed);
  const r = await predict(api, x);
  expect(r.status).toBe(200);
  const rel = releases.find((c) => c.manifest.release === r.body.release);
  expect(rel, `served release ${r.body.release}`).toBeDefined();
  const want = expectedProbs(rel!, x);
  r.body.probabilities!.forEach((v, i) => expect(Math.abs(v - want[i]!)).toBeLessThan(1e-4));
  return r.body.release!;
}

describe.each(brokerMatrix())('edge daemon process over $name', ({ start }) => {
  let broker: TestBroker;
  const cleanups: Array<() => Promise<unknown>> = [];
  const later = (fn: () => Promise<unknown>) => cleanups.push(fn);

  beforeAll(async () => {
    broker = await start();
  });
  afterAll(async () => {
    await broker.stop();
  });
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
  });

  async function setup() {
    const deviceId = newDeviceId();
    const { dir, cleanup } = await tempDir();
    later(cleanup);
    const cloud = await Cloud.connect(broker.url, deviceId);
    later(() => cloud.close());
    const retained: string[] = [];
    later(() => clearRetained(cloud.client, retained));
    const dataDir = join(dir, 'data');
    const configPath = await writeConfig(dir, edgeConfigInput({ deviceId, mqttUrl: broker.url, dataDir, key }));
    const launch = async (env: Record<string, string> = {}, args: string[] = []) => {
      const p = DaemonProcess.spawn(configPath, env, { args });
      later(() => p.kill('SIGKILL'));
      await p.started();
      return p;
    };
    return { deviceId, dir, dataDir, cloud, retained, launch };
  }

  it('SIGTERM: READY after the API listens, watchdog pings, STOPPING, exit 0 and a retained offline status', async (ctx) => {
    const { deviceId, dir, cloud, launch } = await setup();
    let listener: NotifyListener | undefined;
    const env: Record<string, string> = {};
    if (python3() && findExecutable('systemd-notify')) {
      listener = await startNotifyListener(dir);
      later(() => listener!.stop());
      Object.assign(env, { NOTIFY_SOCKET: listener.path, WATCHDOG_USEC: '600000' });
    } else {
      ctx.annotate?.('no python3/systemd-notify: sd_notify delivery not checked here');
    }
    const port = await freePort();
    const daemon = await launch(env, ['--bind', `127.0.0.1:${port}`]); // the flag beats the file's api.bind
    expect(daemon.apiUrl).toBe(`http://127.0.0.1:${port}`);
    expect((await fetch(`${daemon.apiUrl}/healthz`)).status).toBe(200);
    await waitFor(() => cloud.lastStatus()?.state === 'online', 10_000, { message: 'online status' });
    if (listener) {
      await waitFor(() => listener!.messages.filter((m) => m === 'WATCHDOG=1').length >= 2, 5_000, { message: 'watchdog pings' });
      expect(listener.messages.find((m) => m.startsWith('READY=1'))).toBe('READY=1\nSTATUS=waiting for a first model');
    }
    const exit = await daemon.kill('SIGTERM');
    expect(exit).toEqual({ code: 0, signal: null });
    expect(daemon.lines.some((l) => l.msg === 'daemon/offline-published')).toBe(true);
    expect(await retainedStatus(broker.url, deviceId)).toMatchObject({ deviceId, state: 'offline' });
    if (listener) await waitFor(() => listener!.messages.some((m) => m.startsWith('STOPPING=1')), 2_000, { message: 'STOPPING=1' });
  });

  it('kill -9 during a download: restarts on the old model, resumes, and installs the new one', async () => {
    const { deviceId, dataDir, cloud, retained, launch } = await setup();
    const r1 = makeRelease(key, { release: 1, seed: 61 });
    const r2 = makeRelease(key, { release: 2, seed: 62, sizes: [784, 64, 10] }); // ~200 KB in 13 chunks
    let daemon = await launch();
    retained.push(...(await publishRelease(cloud.client, deviceId, r1)));
    await cloud.waitEvent((e) => e.type === 'installed' && e.release === 1);

    const half = Math.ceil(r2.chunks.length / 2);
    retained.push(...(await publishChunks(cloud.client, r2, [...Array(half).keys()])));
    retained.push(await publishDesired(cloud.client, deviceId, r2));
    const progress = join(dataDir, 'downloads', `${r2.manifest.artifact.sha256}.progress.json`);
    await waitFor(() => existsSync(progress) && (JSON.parse(readFileSync(progress, 'utf8')) as { have: number[] }).have.length >= half, 10_000, { message: 'half of release 2 on disk' });
    expect(await readyz(daemon.apiUrl!)).toEqual({ status: 200, release: 1 });
    expect((await daemon.kill('SIGKILL')).signal).toBe('SIGKILL');

    daemon = await launch();
    expect(await readyz(daemon.apiUrl!)).toEqual({ status: 200, release: 1 }); // the old model, restored before serving
    expect(await expectServes(daemon.apiUrl!, [r1], 5)).toBe(1);
    retained.push(...(await publishChunks(cloud.client, r2, [...Array(r2.chunks.length).keys()].slice(half))));
    await cloud.waitEvent((e) => e.type === 'installed' && e.release === 2, 20_000);
    const downloaded = await daemon.logged('updates/downloaded');
    expect(downloaded.resumed).toBeGreaterThanOrEqual(half); // the partial file survived the crash
    expect(await readyz(daemon.apiUrl!)).toEqual({ status: 200, release: 2 });
    expect(await expectServes(daemon.apiUrl!, [r2], 6)).toBe(2);
  });

  it('kill -9 during the switch: restarts on the old or the new model, never a broken one, then installs the new one', async () => {
    const { deviceId, cloud, retained, launch } = await setup();
    const r1 = makeRelease(key, { release: 1, seed: 71 });
    const r2 = makeRelease(key, { release: 2, seed: 72 });
    // The test hook pauses after the host switched to release 2 and before the update state on disk says so.
    let daemon = await launch({ NODE_ENV: 'test', APPRENTICE_TEST_PAUSE_AT: 'switch:2' });
    retained.push(...(await publishRelease(cloud.client, deviceId, r1)));
    await cloud.waitEvent((e) => e.type === 'installed' && e.release === 1);
    retained.push(...(await publishRelease(cloud.client, deviceId, r2)));
    await daemon.logged('test/paused', 20_000);
    expect(await expectServes(daemon.apiUrl!, [r2], 7)).toBe(2); // switched in memory, in-flight safe
    await daemon.kill('SIGKILL');
    expect(cloud.events.some((e) => e.type === 'installed' && e.release === 2)).toBe(false);

    daemon = await launch();
    const first = await expectServes(daemon.apiUrl!, [r1, r2], 8);
    expect([1, 2]).toContain(first);
    await cloud.waitEvent((e) => e.type === 'installed' && e.release === 2, 20_000);
    expect(await readyz(daemon.apiUrl!)).toEqual({ status: 200, release: 2 });
    expect(await expectServes(daemon.apiUrl!, [r2], 9)).toBe(2);
  });
});
