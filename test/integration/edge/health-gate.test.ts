/**
 * The health gate after a switch (issue 10, item 6), in a real daemon with real onnxruntime models over a
 * real broker: a single request of huge finite values (±3e38, which makes a good model output NaN) no
 * longer rolls a good release back; `input.range` refuses such a request with a 400 before the model.
 */
import { describe, expect, it } from 'vitest';
import { generateSigningKey } from '../../../shared/manifest/index.js';
import { makeRelease, publishRelease } from '../../fixtures/edge-release.js';
import { sampleInputs } from '../../fixtures/onnx-models.js';
import { brokerMatrix, sleep } from '../../helpers/broker.js';
import { edgeWorld, edgeConfig, predict, startDaemon } from './harness.js';

const key = generateSigningKey();
const input = (seed: number): number[] => Array.from(sampleInputs(1, 784, seed));
const broker$ = brokerMatrix()[0]!;

describe(`health gate over ${broker$.name}`, () => {
  const w = edgeWorld(broker$);
  const cleanups = w.cleanups;

  async function setup() {
    const { deviceId, dir, cloud, retained } = await w.device();
    const daemon = await startDaemon(edgeConfig({ deviceId, mqttUrl: w.broker.url, dataDir: dir, key, runtime: { healthWindowSeconds: 1.5 } }));
    cleanups.push(() => daemon.stop());
    return { deviceId, cloud, retained, daemon };
  }

  it('one ±3e38 request after a switch makes NaN but does not roll the release back; it is committed', async () => {
    const { deviceId, cloud, retained, daemon } = await setup();
    const r1 = makeRelease(key, { release: 1, seed: 61 });
    const r2 = makeRelease(key, { release: 2, seed: 62, sizes: [784, 64, 10] }); // a good model, with a hidden layer
    retained.push(...(await publishRelease(cloud.client, deviceId, r1)));
    await cloud.waitEvent((e) => e.type === 'committed' && e.release === 1, 15_000);
    retained.push(...(await publishRelease(cloud.client, deviceId, r2)));
    await cloud.waitEvent((e) => e.type === 'installed' && e.release === 2, 15_000);

    const huge = input(1).map(() => -3e38); // overflows the hidden layer of this model: NaN out
    const bad = await predict(daemon.apiUrl!, huge);
    expect(bad.status).toBe(500); // the model really produced a non-finite output
    expect(JSON.stringify(bad.body.error)).toMatch(/non_finite_output/);
    for (let i = 0; i < 5; i++) expect((await predict(daemon.apiUrl!, input(10 + i))).body.release).toBe(2);

    const committed = await cloud.waitEvent((e) => e.type === 'committed' && e.release === 2, 15_000, 'release 2 committed');
    expect(committed.sha256).toBe(r2.manifest.artifact.sha256);
    expect(cloud.events.some((e) => e.type === 'rolled_back')).toBe(false);
    expect((await predict(daemon.apiUrl!, input(20))).body.release).toBe(2);
  }, 60_000);

  it('a model producing NaN at a high rate is still rolled back, once it has seen enough runs', async () => {
    const { deviceId, cloud, retained, daemon } = await setup();
    const r1 = makeRelease(key, { release: 1, seed: 63 });
    const r2 = makeRelease(key, { release: 2, seed: 64, nanOnNegativeSum: true });
    retained.push(...(await publishRelease(cloud.client, deviceId, r1)));
    await cloud.waitEvent((e) => e.type === 'committed' && e.release === 1, 15_000);
    retained.push(...(await publishRelease(cloud.client, deviceId, r2)));
    await cloud.waitEvent((e) => e.type === 'installed' && e.release === 2, 15_000);
    // Half the traffic NaN: far above the 5 % rate, past the 20-run minimum.
    for (let i = 0; i < 19; i++) await predict(daemon.apiUrl!, i % 2 ? input(30 + i) : input(30 + i).map((v) => -v));
    await sleep(50);
    expect(cloud.events.some((e) => e.type === 'rolled_back')).toBe(false); // 19 runs: not enough evidence yet
    await predict(daemon.apiUrl!, input(60).map((v) => -v));
    const rolled = await cloud.waitEvent((e) => e.type === 'rolled_back', 15_000, 'rolled_back nan_output');
    expect(rolled).toMatchObject({ release: 2, reason: 'nan_output', sha256: r2.manifest.artifact.sha256 });
    expect((await predict(daemon.apiUrl!, input(61))).body.release).toBe(1);
  }, 60_000);

  it('input.range: a request outside it gets a 400 naming the value and never reaches the model', async () => {
    const { deviceId, cloud, retained, daemon } = await setup();
    const r1 = makeRelease(key, { release: 1, seed: 65, range: [0, 255] }); // raw uint8 pixels, scaled by 1/255
    retained.push(...(await publishRelease(cloud.client, deviceId, r1)));
    await cloud.waitEvent((e) => e.type === 'installed' && e.release === 1, 15_000);
    const before = daemon.snapshot().telemetry.requests;
    const huge = input(2);
    huge[7] = 3e38;
    const res = await predict(daemon.apiUrl!, huge);
    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject({ code: 'out_of_range', field: 'input.7' });
    const edge = input(3);
    edge[0] = 1; // exactly the top of the range (255 / 255)
    edge[1] = 0;
    expect((await predict(daemon.apiUrl!, edge)).status).toBe(200);
    expect(daemon.snapshot().telemetry.requests).toBe(before + 1); // only the in-range request reached ORT
    const metrics = await (await fetch(`${daemon.apiUrl}/metrics`)).text();
    expect(metrics).toMatch(/apprentice_edge_refused_total\{reason="out_of_range"\} 1/);
  }, 60_000);
});
