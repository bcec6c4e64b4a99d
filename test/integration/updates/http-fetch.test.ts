import { readFile } from 'node:fs/promises';
import type { MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ArtifactFetcher, type FetchProgress } from '../../../edge/updates/index.js';
import { buildArtifactDescriptor } from '../../../shared/manifest/index.js';
import { modelBytes, tempDir } from '../../unit/updates/fixtures.js';
import { ArtifactServer, type ServeMode } from '../../unit/updates/harness.js';
import { connectClient, publishChunks, startAedes, type TestBroker } from './brokers.js';

const server = new ArtifactServer();
let broker: TestBroker;
let cloud: MqttClient;
let device: MqttClient;
beforeAll(async () => {
  await server.start();
  broker = await startAedes();
  cloud = await connectClient(broker.url);
  device = await connectClient(broker.url);
});
afterAll(async () => {
  await device.endAsync(true);
  await cloud.endAsync();
  await broker.close();
  await server.stop();
});

let dir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => ({ dir, cleanup } = await tempDir()));
afterEach(() => cleanup());

let seq = 0;
function served(bytes: Buffer, mode?: ServeMode, body?: Buffer) {
  const name = `a${++seq}`;
  const url = server.serve(name, body ?? bytes, mode);
  return { name, artifact: buildArtifactDescriptor(bytes, { chunkSize: 1024, quantization: 'int8', url }) };
}
const rangesOf = (name: string) => server.requests.filter((q) => q.path === `/${name}`).map((q) => q.range);
const httpOnly = () => ArtifactFetcher.create({ dataDir: dir, httpIdleTimeoutMs: 2000 });
const withMqtt = (idle = 3000) => ArtifactFetcher.create({ dataDir: dir, mqtt: device, httpIdleTimeoutMs: 2000, mqttIdleTimeoutMs: idle });

describe('HTTP artifact source', () => {
  it('downloads and verifies', async () => {
    const bytes = modelBytes(6000);
    const { artifact } = served(bytes);
    const r = await (await httpOnly()).fetch(artifact);
    expect(r).toMatchObject({ source: 'http', writtenChunks: 6, resumedChunks: 0 });
    expect((await readFile(r.path)).equals(bytes)).toBe(true);
  });

  it('resumes a broken transfer with a Range request from the last verified chunk', async () => {
    const bytes = modelBytes(10_000);
    const { name, artifact } = served(bytes, { kind: 'cut', bytes: 4500, times: 1 });
    const f = await httpOnly();
    await expect(f.fetch(artifact)).rejects.toMatchObject({ reason: 'download_failed' });
    const r = await f.fetch(artifact);
    expect(rangesOf(name)).toEqual([undefined, 'bytes=4096-']);
    expect(r).toMatchObject({ resumedChunks: 4, writtenChunks: 6 });
    expect((await readFile(r.path)).equals(bytes)).toBe(true);
  });

  it('copes with a server that ignores Range (200): stored chunks are skipped, not rewritten', async () => {
    const bytes = modelBytes(5000);
    const { name, artifact } = served(bytes, { kind: 'cut', bytes: 2500, times: 1 });
    const f = await httpOnly();
    await expect(f.fetch(artifact)).rejects.toMatchObject({ reason: 'download_failed' });
    server.setMode(name, { kind: 'ignore-range' });
    const progress: FetchProgress[] = [];
    const r = await f.fetch(artifact, { onProgress: (p) => progress.push(p) });
    expect(rangesOf(name)[1]).toBe('bytes=2048-');
    expect(r).toMatchObject({ resumedChunks: 2, writtenChunks: 3, duplicates: 2 });
    expect((await readFile(r.path)).equals(bytes)).toBe(true);
  });

  it.each([
    ['without Content-Length', 'none'],
    ['with an honest, too large Content-Length', 'honest'],
  ] as const)('aborts a server that sends too many bytes (%s)', async (_n, declare) => {
    const bytes = modelBytes(3000);
    const { artifact } = served(bytes, { kind: 'extra', extra: 5000, declare });
    await expect((await httpOnly()).fetch(artifact)).rejects.toMatchObject({ reason: 'length_mismatch' });
  });

  it('refuses other bytes (hash_mismatch) when MQTT has nothing either', async () => {
    const bytes = modelBytes(3000);
    const { artifact } = served(bytes, undefined, modelBytes(3000));
    await expect((await withMqtt(300)).fetch(artifact)).rejects.toMatchObject({ reason: 'hash_mismatch' });
  });

  it('falls back to MQTT when the HTTP source fails', async () => {
    const bytes = modelBytes(4000);
    const { artifact } = served(bytes, { kind: 'status', status: 404, times: 99 });
    const topicsUsed = await publishChunks(cloud, bytes, artifact);
    const r = await (await withMqtt()).fetch(artifact);
    expect(r).toMatchObject({ source: 'mqtt', writtenChunks: 4 });
    expect(r.httpError).toMatch(/HTTP 404/);
    expect((await readFile(r.path)).equals(bytes)).toBe(true);
    expect(topicsUsed).toHaveLength(4);
  });

  it('MQTT completes what HTTP started: progress is shared between sources', async () => {
    const bytes = modelBytes(8000);
    const { artifact } = served(bytes, { kind: 'cut', bytes: 3500, times: 99 });
    await publishChunks(cloud, bytes, artifact);
    const written: Array<[string, number]> = [];
    const r = await (await withMqtt()).fetch(artifact, { onProgress: (p) => p.status === 'written' && written.push([p.source, p.index]) });
    expect(written.filter(([s]) => s === 'http').map(([, i]) => i)).toEqual([0, 1, 2]);
    expect(written.filter(([s]) => s === 'mqtt').map(([, i]) => i).sort()).toEqual([3, 4, 5, 6, 7]);
    expect(r.duplicates).toBe(3);
    expect((await readFile(r.path)).equals(bytes)).toBe(true);
  });
});
