/**
 * 200 hot swaps through the whole update loop of a daemon process — signed desired manifest over MQTT →
 * verify → slot → new ORT session + self-test → switch → state fsync → installed event — with
 * predictions in between, and the process's RSS measured from /proc. Two models alternate, so after the
 * first two downloads every swap reuses a kept slot (the loop is about sessions, not bytes).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSigningKey } from '../../../shared/manifest/index.js';
import { makeRelease, publishChunks, publishDesired, type TestRelease } from '../../fixtures/edge-release.js';
import { sampleInputs } from '../../fixtures/onnx-models.js';
import { startAedes, sleep, type TestBroker } from '../../helpers/broker.js';
import { Cloud, DaemonProcess, edgeConfigInput, newDeviceId, predict, tempDir, writeConfig } from './harness.js';

/** Swaps measured, after WARMUP swaps that let V8 and ORT reach their steady state. */
const SWAPS = 200;
const WARMUP = 30;
const MB = 1024 * 1024;
const REMEMBER = Number(process.env.APPRENTICE_SWAPS_REMEMBER ?? 100);

describe('hot swaps in a daemon process', () => {
  let broker: TestBroker;
  let daemon: DaemonProcess;
  let cloud: Cloud;
  let cleanup: () => Promise<void>;
  const key = generateSigningKey();
  const deviceId = newDeviceId();

  beforeAll(async () => {
    broker = await startAedes();
    const t = await tempDir();
    cleanup = t.cleanup;
    // A long health window: the gate must not decide anything while models come and go. A short feedback
    // memory: each remembered prediction pins its release's manifest (~20 KB with a 784-value self-test)
    // for up to 10k predictions / 1 h, a bounded cache that would otherwise be measured as growth here.
    const config = { runtime: { healthWindowSeconds: 3600 }, api: { rememberPredictions: REMEMBER }, telemetrySeconds: 3600 };
    const path = await writeConfig(t.dir, edgeConfigInput({ deviceId, mqttUrl: broker.url, dataDir: `${t.dir}/data`, key, ...config }));
    // A full GC on SIGUSR2 (a test preload, not the daemon's code): RSS is read after one, so the figure is
    // what stays allocated, not where the GC sawtooth happens to be (it swings by 10-15 MB here).
    daemon = DaemonProcess.spawn(path, {}, { nodeArgs: ['--expose-gc', '--import', './test/fixtures/gc-on-signal.ts'] });
    await daemon.started();
    cloud = await Cloud.connect(broker.url, deviceId);
  });
  afterAll(async () => {
    await daemon?.kill('SIGKILL');
    await cloud?.close();
    await broker?.stop();
    await cleanup?.();
  });

  it(`keeps RSS flat over ${SWAPS} swaps after ${WARMUP} warm-up swaps (≤ 10 MB growth)`, async () => {
    const sizes = [784, 64, 10];
    const release = (n: number): TestRelease => makeRelease(key, { release: n, seed: n % 2 === 1 ? 91 : 92, sizes });
    const x = Array.from(sampleInputs(1, 784, 3));
    const rss = async () => {
      // Let in-flight session releases finish, collect, then read.
      await sleep(200);
      daemon.child.kill('SIGUSR2');
      await sleep(300);
      return daemon.rss();
    };
    let baseline = 0;
    const t0 = Date.now();
    for (let n = 1; n <= WARMUP + SWAPS; n++) {
      const rel = release(n);
      if (n <= 2) await publishChunks(cloud.client, rel);
      await publishDesired(cloud.client, deviceId, rel);
      await cloud.waitEvent((e) => e.type === 'installed' && e.release === n, 20_000, `release ${n} installed`);
      // Requests around the swap: they finish on whichever session they started on.
      const answers = await Promise.all([predict(daemon.apiUrl!, x), predict(daemon.apiUrl!, x)]);
      for (const a of answers) expect(a.status).toBe(200);
      expect(answers[1]!.body.release).toBe(n);
      if (n === WARMUP) baseline = await rss();
      if (process.env.APPRENTICE_SWAPS_TRACE && n % 10 === 0) console.log(n, ((await rss()) / MB).toFixed(1));
    }
    const after = await rss();
    const growth = after - baseline;
    console.log(`[edge swaps] ${WARMUP + SWAPS} swaps in ${Date.now() - t0} ms; RSS after ${WARMUP}: ${(baseline / MB).toFixed(1)} MB, after ${WARMUP + SWAPS}: ${(after / MB).toFixed(1)} MB, growth over ${SWAPS} swaps ${(growth / MB).toFixed(2)} MB (feedback memory ${REMEMBER} predictions)`);
    expect(cloud.events.filter((e) => e.type === 'installed')).toHaveLength(WARMUP + SWAPS);
    expect(cloud.events.filter((e) => e.type !== 'installed')).toEqual([]);
    expect(growth).toBeLessThanOrEqual(10 * MB);
  });
});
