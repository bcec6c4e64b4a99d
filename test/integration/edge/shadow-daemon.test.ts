/**
 * Shadow mode in the whole daemon (issue 13 items 4 and 7): a real broker, real signed releases, real ORT.
 * The compatibility both ways: the daemon declares `manifest.shadow`; to a cloud that has not said it
 * accepts them it sends no `telemetry.shadow` and its disagreements as `low_margin`, and once the cloud's
 * info accepts them, the figures and `shadow_disagreement`.
 */
import { describe, expect, it } from 'vitest';
import { DEVICE_CAPABILITIES, cloudInfo, topics } from '../../../shared/protocol/index.js';
import { generateSigningKey } from '../../../shared/manifest/index.js';
import { makeRelease, publishRelease } from '../../fixtures/edge-release.js';
import { sampleInputs } from '../../fixtures/onnx-models.js';
import { brokerMatrix, waitFor } from '../../helpers/broker.js';
import { edgeConfig, edgeWorld, predict, startDaemon } from './harness.js';

const key = generateSigningKey();
// Only shadow disagreements become examples here: every scored reason is off, no caps.
const selection = { lowConfidence: { enabled: false }, lowMargin: { enabled: false }, highEntropy: { enabled: false }, audit: { rate: 0 }, caps: { perMinute: null, perHour: null } };

describe('shadow mode in the edge daemon (aedes)', () => {
  const world = edgeWorld(brokerMatrix()[0]!);

  it('answers with the running model, reports figures and disagreements as the cloud can read them', async () => {
    const { deviceId, dir, cloud, retained } = await world.device();
    const daemon = await startDaemon(edgeConfig({ deviceId, mqttUrl: world.broker.url, dataDir: dir, key, selection, telemetrySeconds: 1 }));
    world.cleanups.push(() => daemon.stop());
    retained.push(...(await publishRelease(cloud.client, deviceId, makeRelease(key, { release: 1, seed: 61 }))));
    await cloud.waitEvent((e) => e.type === 'installed' && e.release === 1);
    retained.push(...(await publishRelease(cloud.client, deviceId, makeRelease(key, { release: 2, seed: 62, shadowUntil: new Date(Date.now() + 3_600_000) }))));
    await waitFor(() => daemon.snapshot().shadow?.state === 'running', 20_000, { message: 'shadow loaded' });
    expect(daemon.snapshot().telemetry.shadow).toBeUndefined(); // collected, not sent: the cloud has not said it accepts it

    const run = async (from: number, n: number) => {
      for (let i = 0; i < n; i++) {
        const r = await predict(daemon.apiUrl!, Array.from(sampleInputs(1, 784, from + i)));
        expect(r.status).toBe(200);
        expect(r.body.release).toBe(1); // the shadow never answers
      }
    };
    // An older cloud (no cloud info): no shadow field in telemetry, disagreements as low_margin.
    await run(100, 30);
    const older = await waitFor(() => cloud.batches.flatMap((b) => b.examples)[0], 20_000, { message: 'a disagreement example' });
    expect(older.reason).toBe('low_margin');
    expect(older.release).toBe(1);
    const t0 = cloud.telemetry.length;
    await waitFor(() => cloud.telemetry.length > t0, 10_000, { message: 'telemetry' });
    expect(cloud.telemetry.at(-1)).not.toHaveProperty('shadow');
    expect(cloud.invalid).toEqual([]);

    // The cloud says what it accepts: the same traffic now reports figures and shadow_disagreement.
    await cloud.client.publishAsync(topics.cloudInfo(), JSON.stringify(cloudInfo(new Date())), { qos: 1, retain: true });
    retained.push(topics.cloudInfo());
    await waitFor(() => cloud.lastStatus()?.capabilities?.includes(DEVICE_CAPABILITIES.shadow), 20_000, { message: 'status with capabilities' });
    await run(200, 30);
    // A shadow run still busy when the next request comes is skipped (live answers never wait): counted apart.
    const live = () => daemon.snapshot().shadow!;
    await waitFor(() => live().requests + live().skipped >= 60, 20_000, { message: 'every request shadowed or skipped' });
    const fig = await waitFor(() => cloud.telemetry.find((t) => t.shadow && t.shadow.requests + t.shadow.skipped >= 60)?.shadow, 20_000, { message: 'shadow telemetry' });
    expect(fig).toMatchObject({ release: 2, state: 'running' });
    expect(fig.requests).toBeGreaterThan(0);
    expect(fig.agreements).toBeLessThan(fig.requests);
    const newer = await waitFor(() => cloud.batches.flatMap((b) => b.examples).find((e) => e.reason === 'shadow_disagreement'), 20_000, { message: 'a shadow_disagreement example' });
    expect(newer.release).toBe(1);
    // Every disagreement became an example in the outbox (no caps, distinct inputs): the device's figures and
    // its selected examples agree. (Not all reach this cloud stand-in: it accepts receipts but sends none.)
    await waitFor(() => daemon.snapshot().outbox.selected === live().requests - live().agreements, 20_000, { message: 'one example per disagreement' }).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}: ${daemon.snapshot().outbox.selected} selected, figures ${JSON.stringify(live())}`);
    });
    expect(cloud.invalid).toEqual([]);
  });
});
