/**
 * The edge daemon in-process (EdgeDaemon.create/start/stop) against real brokers — aedes always,
 * Mosquitto when the binary exists — with real signed releases, real ORT, real SQLite.
 */
import sharp from 'sharp';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cloudInfo, topics } from '../../../shared/protocol/index.js';
import type { EdgeDaemon } from '../../../edge/daemon.js';
import { generateSigningKey } from '../../../shared/manifest/index.js';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { clearRetained, expectedProbs, makeRelease, publishChunks, publishDesired, publishRelease } from '../../fixtures/edge-release.js';
import { sampleInputs } from '../../fixtures/onnx-models.js';
import { brokerMatrix, waitFor, type TestBroker } from '../../helpers/broker.js';
import { Cloud, edgeConfig, newDeviceId, predict, readyz, retainedStatus, startDaemon, startNetworkCut, tempDir, type NetworkCut } from './harness.js';

const key = generateSigningKey();
const input = (seed: number): number[] => Array.from(sampleInputs(1, 784, seed));

describe.each(brokerMatrix())('edge daemon over $name', ({ start }) => {
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
    // Reverse order: daemons before the clients and dirs they use.
    while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
  });

  async function setup(o: { url?: string; selection?: object; telemetrySeconds?: number; healthWindowSeconds?: number } = {}) {
    const deviceId = newDeviceId();
    const { dir, cleanup } = await tempDir();
    later(cleanup);
    const cloud = await Cloud.connect(broker.url, deviceId);
    later(() => cloud.close());
    const retained: string[] = [];
    later(() => clearRetained(cloud.client, retained));
    const config = edgeConfig({ deviceId, mqttUrl: o.url ?? broker.url, dataDir: dir, key, selection: o.selection, telemetrySeconds: o.telemetrySeconds ?? 30, runtime: { healthWindowSeconds: o.healthWindowSeconds ?? 60 } });
    const daemons: EdgeDaemon[] = [];
    const launch = async () => {
      const d = await startDaemon(config);
      daemons.push(d);
      later(() => d.stop());
      return d;
    };
    return { deviceId, dir, cloud, retained, config, launch };
  }

  it('installs a release end to end: 503 before, then predictions, retained status, installed event, telemetry', async () => {
    const { deviceId, cloud, retained, launch } = await setup({ telemetrySeconds: 1, healthWindowSeconds: 1 });
    const daemon = await launch();
    const api = daemon.apiUrl!;
    expect(await readyz(api)).toEqual({ status: 503, release: undefined });
    expect((await predict(api, input(1))).status).toBe(503);
    await waitFor(() => cloud.lastStatus()?.state === 'online', 10_000, { message: 'online status' });
    expect(cloud.lastStatus()).toMatchObject({ state: 'online', release: null, model: null });

    const rel = makeRelease(key, { release: 1, seed: 11 });
    retained.push(...(await publishRelease(cloud.client, deviceId, rel)));
    const installed = await cloud.waitEvent((e) => e.type === 'installed');
    expect(installed).toMatchObject({ deviceId, release: 1, sha256: rel.manifest.artifact.sha256, model: 'mnist-student' });
    expect(await readyz(api)).toEqual({ status: 200, release: 1 });

    const x = input(7);
    const r = await predict(api, x);
    expect(r.status).toBe(200);
    expect(r.body.release).toBe(1);
    expectProbsClose(r.body.probabilities!, expectedProbs(rel, x));

    await waitFor(() => cloud.lastStatus()?.release === 1, 5_000, { message: 'status with release 1' });
    expect(await retainedStatus(broker.url, deviceId)).toMatchObject({ state: 'online', release: 1, sha256: rel.manifest.artifact.sha256 });

    const beat = await waitFor(() => cloud.telemetry.find((t) => t.release === 1 && t.requests >= 1), 5_000, { message: 'telemetry after a prediction' });
    expect(beat).toMatchObject({ deviceId, model: 'mnist-student', health: 'ok', errors: 0 });
    expect(beat.latencyMs.p50).toBeGreaterThan(0);
    // Telemetry carries the outbox stats except `refused` (counted inside `dropped`).
    expect(daemon.snapshot().outbox).toMatchObject(beat.outbox);
    // The health window passed without errors: the cloud hears the release is healthy (rollouts advance on it).
    expect(await cloud.waitEvent((e) => e.type === 'committed', 5_000)).toMatchObject({ release: 1, sha256: rel.manifest.artifact.sha256 });
    expect(cloud.invalid).toEqual([]);
  });

  it('resumes a download across a network outage (the chunk subscription comes back with the connection)', async () => {
    const link = await startNetworkCut(broker.port);
    later(() => link.stop());
    const { deviceId, dir, cloud, retained, launch } = await setup({ url: link.url });
    const daemon = await launch();
    const rel = makeRelease(key, { release: 1, seed: 13, sizes: [784, 64, 10] });
    const half = Math.ceil(rel.chunks.length / 2);
    retained.push(...(await publishChunks(cloud.client, rel, [...Array(half).keys()])));
    retained.push(await publishDesired(cloud.client, deviceId, rel));
    const progress = join(dir, 'downloads', `${rel.manifest.artifact.sha256}.progress.json`);
    await waitFor(() => existsSync(progress) && (JSON.parse(readFileSync(progress, 'utf8')) as { have: number[] }).have.length >= half, 10_000, { message: 'half downloaded' });
    await link.cut();
    await waitFor(() => !daemon.mqtt.connected, 5_000, { message: 'device offline' });
    retained.push(...(await publishChunks(cloud.client, rel, [...Array(rel.chunks.length).keys()].slice(half))));
    await link.restore();
    await cloud.waitEvent((e) => e.type === 'installed' && e.release === 1, 15_000);
    expect(await readyz(daemon.apiUrl!)).toEqual({ status: 200, release: 1 });
  });

  it('keeps answering predictions with the broker down, and stops cleanly without it', async () => {
    const own = await start(); // a broker of its own, to take down
    later(() => own.stop());
    const deviceId = newDeviceId();
    const { dir, cleanup } = await tempDir();
    later(cleanup);
    const cloud = await Cloud.connect(own.url, deviceId);
    later(() => cloud.close());
    const daemon = await startDaemon(edgeConfig({ deviceId, mqttUrl: own.url, dataDir: dir, key }));
    later(() => daemon.stop());
    const rel = makeRelease(key, { release: 1, seed: 12 });
    await publishRelease(cloud.client, deviceId, rel);
    await cloud.waitEvent((e) => e.type === 'installed');
    await cloud.close();

    await own.stop();
    await waitFor(() => !daemon.mqtt.connected, 5_000, { message: 'device sees the broker gone' });
    for (let i = 0; i < 20; i++) {
      const x = input(100 + i);
      const r = await predict(daemon.apiUrl!, x);
      expect(r.status).toBe(200);
      expectProbsClose(r.body.probabilities!, expectedProbs(rel, x));
    }
    expect(await readyz(daemon.apiUrl!)).toEqual({ status: 200, release: 1 });
    const t0 = Date.now();
    await daemon.stop();
    expect(Date.now() - t0).toBeLessThan(8_000);
  });

  it('refuses a lower release replayed after a restart (stale_release) and keeps serving the installed one', async () => {
    const { deviceId, cloud, retained, launch } = await setup();
    const first = await launch();
    const r1 = makeRelease(key, { release: 1, seed: 21 });
    const r2 = makeRelease(key, { release: 2, seed: 22 });
    retained.push(...(await publishRelease(cloud.client, deviceId, r1)));
    await cloud.waitEvent((e) => e.type === 'installed' && e.release === 1);
    retained.push(...(await publishRelease(cloud.client, deviceId, r2)));
    await cloud.waitEvent((e) => e.type === 'installed' && e.release === 2);
    await first.stop();

    // The old manifest comes back as the retained desired state (a replay, or a cloud restored from backup).
    await publishDesired(cloud.client, deviceId, r1);
    const second = await launch();
    expect(await readyz(second.apiUrl!)).toEqual({ status: 200, release: 2 }); // restored before serving
    const stale = await cloud.waitEvent((e) => e.type === 'rejected');
    expect(stale).toMatchObject({ reason: 'stale_release', release: 1 });
    expect(await readyz(second.apiUrl!)).toEqual({ status: 200, release: 2 });
    await waitFor(() => cloud.lastStatus()?.release === 2, 5_000, { message: 'status still release 2' });
  });

  it('rolls back a model that turns out unhealthy, reports it (queued while offline) and republishes status', async () => {
    const link = await startNetworkCut(broker.port);
    later(() => link.stop());
    const { deviceId, cloud, retained, launch } = await setup({ url: link.url });
    const daemon = await launch();
    const good = makeRelease(key, { release: 1, seed: 51 });
    const bad = makeRelease(key, { release: 2, seed: 52, nanOnNegativeSum: true }); // passes its self-test
    retained.push(...(await publishRelease(cloud.client, deviceId, good)));
    await cloud.waitEvent((e) => e.type === 'installed' && e.release === 1);
    retained.push(...(await publishRelease(cloud.client, deviceId, bad)));
    await cloud.waitEvent((e) => e.type === 'installed' && e.release === 2);
    await waitFor(() => cloud.lastStatus()?.release === 2, 5_000, { message: 'status release 2' });

    await link.cut(); // the verdict and the rollback happen offline
    await waitFor(() => !daemon.mqtt.connected, 5_000, { message: 'device offline' });
    // A negative sum: NaN out of release 2, at a rate (100 %) over the gate's minimum number of runs.
    for (let i = 0; i < 20; i++) {
      const r = await predict(daemon.apiUrl!, input(5 + i).map((v) => -v));
      if (i < 19) expect(r.status).toBeGreaterThanOrEqual(500);
    }
    await waitFor(async () => (await readyz(daemon.apiUrl!)).release === 1, 5_000, { message: 'serving release 1 again' });
    expect((await predict(daemon.apiUrl!, input(6))).body.release).toBe(1);
    expect(cloud.events.some((e) => e.type === 'rolled_back')).toBe(false);

    await link.restore();
    const rolled = await cloud.waitEvent((e) => e.type === 'rolled_back');
    expect(rolled).toMatchObject({ release: 2, sha256: bad.manifest.artifact.sha256, reason: 'nan_output' });
    await waitFor(() => cloud.lastStatus()?.release === 1, 5_000, { message: 'status back to release 1' });
    // The deny-listed model is not taken again from the (still retained) desired manifest.
    expect(await readyz(daemon.apiUrl!)).toEqual({ status: 200, release: 1 });
  });

  it('sends low-confidence predictions to the cloud as hard examples, each UUID once', async () => {
    const selection = { lowConfidence: { enabled: true, threshold: 0.999 }, caps: { perMinute: null, perHour: null } };
    const { deviceId, cloud, retained, launch } = await setup({ selection });
    const daemon = await launch();
    const rel = makeRelease(key, { release: 1, seed: 31 });
    retained.push(...(await publishRelease(cloud.client, deviceId, rel)));
    await cloud.waitEvent((e) => e.type === 'installed');
    const N = 40;
    for (let i = 0; i < N; i++) expect((await predict(daemon.apiUrl!, input(1000 + i))).status).toBe(200);
    await committed(daemon);
    const selected = daemon.snapshot().outbox.selected;
    expect(selected).toBeGreaterThan(N / 2);
    await waitFor(() => cloud.exampleIds().length >= selected, 10_000, { message: `${selected} examples at the cloud` });
    const ids = cloud.exampleIds();
    expect(new Set(ids).size).toBe(selected);
    for (const ex of cloud.batches.flatMap((b) => b.examples)) {
      expect(ex).toMatchObject({ model: 'mnist-student', release: 1, reason: 'low_confidence' });
      expect(Math.max(...ex.output)).toBeLessThan(0.999);
    }
    await waitFor(() => daemon.snapshot().outbox.depth === 0, 5_000, { message: 'outbox drained' });
    expect(daemon.snapshot().outbox).toMatchObject({ published: selected, dropped: 0, evicted: 0 });
    // The same counters are scraped by Prometheus.
    const metrics = await (await fetch(`${daemon.apiUrl}/metrics`)).text();
    expect(metrics).toContain(`apprentice_edge_outbox{stat="published"} ${selected}`);
    expect(metrics).toContain(`apprentice_edge_selection{outcome="selected",reason="low_confidence"} ${selected}`);

    // A user label goes the same way, under the prediction's id: sent twice, it reaches the cloud only under
    // that one UUID (the outbox drops a repeat while the first is queued; the cloud's ingest dedupes the rest).
    const p = await predict(daemon.apiUrl!, input(999));
    const fb = () => fetch(`${daemon.apiUrl}/v1/feedback`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ id: p.body.id, label: 'digit_3' }) });
    expect(await (await fb()).json()).toMatchObject({ id: p.body.id, index: 3, stored: true });
    expect((await fb()).status).toBe(200);
    const labelled = await waitFor(() => cloud.batches.flatMap((b) => b.examples).find((e) => e.id === p.body.id), 10_000, { message: 'feedback example' });
    expect(labelled).toMatchObject({ reason: 'feedback', label: 3, release: 1 });
    await waitFor(() => daemon.snapshot().outbox.depth === 0, 5_000, { message: 'outbox drained again' });
    const feedback = cloud.batches.flatMap((b) => b.examples).filter((e) => e.reason === 'feedback');
    expect(feedback.length).toBeGreaterThanOrEqual(1);
    expect(new Set(feedback.map((e) => e.id))).toEqual(new Set([p.body.id]));
  });

  it("an image model's hard example carries its re-encoded source image, only once the cloud accepts it (issue 11)", async () => {
    const selection = { lowConfidence: { enabled: true, threshold: 0.999 }, caps: { perMinute: null, perHour: null } };
    const { deviceId, cloud, retained, launch } = await setup({ selection });
    const daemon = await launch();
    const image = { height: 8, width: 8, channels: 1 as const, layout: 'nhwc' as const, mean: [0], std: [1] };
    const rel = makeRelease(key, { release: 1, seed: 41, sizes: [64, 3], image });
    retained.push(...(await publishRelease(cloud.client, deviceId, rel)));
    await cloud.waitEvent((e) => e.type === 'installed');
    // A different image each time: the selector drops repeats of an input (dedupe).
    let n = 0;
    const png = () => sharp(Buffer.from(Array.from({ length: 64 }, (_, i) => (i * 4 + n++ * 7) % 256)), { raw: { width: 8, height: 8, channels: 1 } }).png().toBuffer();
    const send = async () => expect((await fetch(`${daemon.apiUrl}/v1/predict`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: await png() })).status).toBe(200);
    const examples = () => cloud.batches.flatMap((b) => b.examples);

    // No cloud info yet (an older cloud): today's example, no source field.
    await send();
    const first = await waitFor(() => examples()[0], 10_000, { message: 'first example' });
    expect(first).not.toHaveProperty('source');

    // The cloud says it accepts source images: the next examples carry the PNG, re-encoded.
    await cloud.client.publishAsync(topics.cloudInfo(), JSON.stringify(cloudInfo(new Date())), { qos: 1, retain: true });
    retained.push(topics.cloudInfo());
    const withSource = await waitFor(
      async () => {
        await send();
        return examples().find((e) => e.source);
      },
      10_000,
      { intervalMs: 200, message: 'an example with its source image' },
    );
    expect(withSource.source!.format).toBe('png');
    const decoded = await sharp(Buffer.from(withSource.source!.data, 'base64')).raw().toBuffer({ resolveWithObject: true });
    expect(decoded.info).toMatchObject({ width: 8, height: 8 });
    const metrics = await (await fetch(`${daemon.apiUrl}/metrics`)).text();
    expect(metrics).toMatch(/apprentice_edge_source_images\{stat="attached"\} [1-9]/);
  });

  it('keeps hard examples across a restart with the network down and delivers them all when it returns', async () => {
    const link: NetworkCut = await startNetworkCut(broker.port);
    later(() => link.stop());
    const selection = { lowConfidence: { enabled: true, threshold: 0.999 }, caps: { perMinute: null, perHour: null } };
    const { deviceId, cloud, retained, launch } = await setup({ url: link.url, selection });
    const first = await launch();
    const rel = makeRelease(key, { release: 1, seed: 41 });
    retained.push(...(await publishRelease(cloud.client, deviceId, rel)));
    await cloud.waitEvent((e) => e.type === 'installed');

    await link.cut();
    await waitFor(() => !first.mqtt.connected, 5_000, { message: 'device offline' });
    for (let i = 0; i < 25; i++) expect((await predict(first.apiUrl!, input(2000 + i))).status).toBe(200);
    await committed(first);
    const before = first.snapshot().outbox;
    expect(before.depth).toBe(before.selected);
    expect(before.depth).toBeGreaterThan(10);
    await first.stop();

    // Restart while the network is still down: the daemon starts, restores the model, keeps the queue.
    const second = await launch();
    expect(second.snapshot().outbox).toMatchObject({ depth: before.depth, selected: before.selected });
    for (let i = 0; i < 15; i++) expect((await predict(second.apiUrl!, input(3000 + i))).status).toBe(200);
    await committed(second);
    const total = second.snapshot().outbox.selected;
    expect(cloud.exampleIds()).toEqual([]);

    await link.restore();
    await waitFor(() => new Set(cloud.exampleIds()).size >= total, 15_000, { message: `${total} examples after the network returned` });
    expect(new Set(cloud.exampleIds()).size).toBe(total);
    await waitFor(() => second.snapshot().outbox.depth === 0, 5_000, { message: 'outbox drained' });
    expect(second.snapshot().outbox).toMatchObject({ selected: total, published: total, dropped: 0, evicted: 0 });
  });
});

/** Selected examples are committed by the outbox writer shortly after the responses: wait for its queue to empty. */
async function committed(daemon: EdgeDaemon): Promise<void> {
  await waitFor(() => daemon.snapshot().writer.pending === 0, 5_000, { message: 'outbox writer committed its queue' });
}

function expectProbsClose(got: number[], want: number[]): void {
  expect(got).toHaveLength(want.length);
  got.forEach((v, i) => expect(Math.abs(v - want[i]!)).toBeLessThan(1e-4));
}
