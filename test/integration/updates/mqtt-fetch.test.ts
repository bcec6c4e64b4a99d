import { readFile } from 'node:fs/promises';
import type { MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ArtifactFetcher, type FetchProgress } from '../../../edge/updates/index.js';
import { buildArtifactDescriptor } from '../../../shared/manifest/index.js';
import { topics } from '../../../shared/protocol/index.js';
import { modelBytes, tempDir } from '../../unit/updates/fixtures.js';
import { waitFor } from '../../unit/updates/harness.js';
import { clearRetained, connectClient, connectMosquitto, mosquittoReachable, publishChunks, startAedes, type TestBroker } from './brokers.js';

const hasMosquitto = await mosquittoReachable();
const brokers: Array<[string, () => Promise<TestBroker>]> = [['aedes', startAedes]];
if (hasMosquitto) brokers.push(['mosquitto', connectMosquitto]);

describe.each(brokers)('MQTT chunk download via %s', (_name, start) => {
  let broker: TestBroker;
  let cloud: MqttClient;
  let device: MqttClient;
  let dir: string;
  let cleanup: () => Promise<void>;
  let published: string[] = [];
  const clients: MqttClient[] = [];

  beforeAll(async () => {
    broker = await start();
    cloud = await connectClient(broker.url);
  });
  afterAll(async () => {
    await cloud.endAsync();
    await broker.close();
  });
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir());
    device = await connectClient(broker.url);
    clients.push(device);
    published = [];
  });
  afterEach(async () => {
    await clearRetained(cloud, published);
    await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
    await cleanup();
  });

  const artifactFor = (bytes: Buffer) => buildArtifactDescriptor(bytes, { chunkSize: 1024, quantization: 'fp32' });
  const publish = async (...args: Parameters<typeof publishChunks>) => void published.push(...(await publishChunks(...args)));
  const fetcher = (client = device, idle = 5000) => ArtifactFetcher.create({ dataDir: dir, mqtt: client, mqttIdleTimeoutMs: idle });

  it('downloads retained and live chunks, verifies the file, then unsubscribes', async () => {
    const bytes = modelBytes(10_000); // 10 chunks
    const artifact = artifactFor(bytes);
    await publish(cloud, bytes, artifact, [0, 1, 2, 3, 4]); // retained before the subscribe
    const f = await fetcher();
    const seen: FetchProgress[] = [];
    const done = f.fetch(artifact, { onProgress: (p) => seen.push(p) });
    await waitFor(() => seen.length >= 5, 5000, 'retained chunks');
    await publish(cloud, bytes, artifact, [5, 6, 7, 8, 9]); // live
    const r = await done;
    expect(r).toMatchObject({ source: 'mqtt', resumedChunks: 0, writtenChunks: 10 });
    expect((await readFile(r.path)).equals(bytes)).toBe(true);

    // No subscription is left: a chunk published now does not reach the device. (The UNSUBSCRIBE
    // and the cloud's PUBLISH travel on different connections: give the broker a moment.)
    await new Promise((r) => setTimeout(r, 150));
    let stray = 0;
    device.on('message', (t) => void (t.includes(artifact.sha256) && stray++));
    await publish(cloud, bytes, artifact, [0]);
    await new Promise((r) => setTimeout(r, 200));
    expect(stray).toBe(0);
  });

  it('resumes after a disconnect: the reconnect redelivers, verified chunks are kept and skipped', async () => {
    const bytes = modelBytes(12_000); // 12 chunks
    const artifact = artifactFor(bytes);
    await publish(cloud, bytes, artifact, [0, 1, 2, 3, 4, 5]);
    const f = await fetcher();
    const written: number[] = [];
    let duplicates = 0;
    const done = f.fetch(artifact, { onProgress: (p) => (p.status === 'written' ? written.push(p.index) : duplicates++) });
    await waitFor(() => written.length === 6, 5000, 'first half');
    let reconnected = false;
    device.once('connect', () => (reconnected = true));
    device.stream.destroy(); // the network drops mid-download
    await publish(cloud, bytes, artifact, [6, 7, 8, 9, 10, 11]); // published while the device is away
    const r = await done;
    expect(reconnected).toBe(true);
    expect(written.sort((a, b) => a - b)).toEqual([...Array(12).keys()]); // each chunk written exactly once
    expect(duplicates).toBeGreaterThanOrEqual(6); // the first half came again and was skipped
    expect(r.writtenChunks).toBe(12);
    expect((await readFile(r.path)).equals(bytes)).toBe(true);
  });

  it('resumes after a restart: a new fetcher on the same data dir only needs the missing chunks', async () => {
    const bytes = modelBytes(8000); // 8 chunks
    const artifact = artifactFor(bytes);
    await publish(cloud, bytes, artifact, [0, 2, 4, 6]);
    const first = await fetcher();
    const abort = new AbortController();
    let n = 0;
    const attempt = first.fetch(artifact, { signal: abort.signal, onProgress: () => ++n === 4 && abort.abort(new Error('daemon stopping')) });
    await expect(attempt).rejects.toThrow('daemon stopping');

    const device2 = await connectClient(broker.url);
    clients.push(device2);
    await publish(cloud, bytes, artifact, [1, 3, 5, 7]);
    const second = await fetcher(device2);
    const r = await second.fetch(artifact);
    expect(r).toMatchObject({ resumedChunks: 4, writtenChunks: 4 });
    expect(r.duplicates).toBe(4);
    expect((await readFile(r.path)).equals(bytes)).toBe(true);
  });

  it.each([
    ['an oversize chunk', 'length_mismatch', (i: number, c: Buffer) => (i === 2 ? Buffer.concat([c, Buffer.from([0])]) : c)],
    ['a truncated chunk', 'length_mismatch', (i: number, c: Buffer) => (i === 2 ? c.subarray(1) : c)],
    ['a corrupted chunk', 'hash_mismatch', (i: number, c: Buffer) => (i === 2 ? Buffer.from(c.map((x, j) => (j === 7 ? x ^ 1 : x))) : c)],
  ])('refuses %s (%s) and keeps the verified ones', async (_n, reason, tamper) => {
    const bytes = modelBytes(4000);
    const artifact = artifactFor(bytes);
    await publish(cloud, bytes, artifact, [0, 1], undefined);
    const f = await fetcher();
    const refused = expect(f.fetch(artifact)).rejects.toMatchObject({ reason });
    await new Promise((r) => setTimeout(r, 100));
    await publish(cloud, bytes, artifact, [2, 3], tamper);
    await refused;
    // Fix the bad chunk: the next attempt resumes with everything that did verify.
    await publish(cloud, bytes, artifact, [2]);
    const r = await f.fetch(artifact);
    expect(r.resumedChunks).toBeGreaterThanOrEqual(2);
    expect((await readFile(r.path)).equals(bytes)).toBe(true);
  });

  it('refuses a chunk index beyond the signed length', async () => {
    const bytes = modelBytes(2000);
    const artifact = artifactFor(bytes);
    const extra = topics.artifactChunk(artifact.sha256, 2);
    await cloud.publishAsync(extra, Buffer.alloc(1024), { qos: 1, retain: true });
    published.push(extra);
    await expect((await fetcher()).fetch(artifact)).rejects.toMatchObject({ reason: 'length_mismatch' });
  });

  it('fails with download_failed when no chunk arrives within the idle timeout', async () => {
    const bytes = modelBytes(3000);
    const t0 = Date.now();
    await expect((await fetcher(device, 300)).fetch(artifactFor(bytes))).rejects.toMatchObject({ reason: 'download_failed' });
    expect(Date.now() - t0).toBeLessThan(3000);
  });
});
