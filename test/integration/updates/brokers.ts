import { randomBytes } from 'node:crypto';
import { createServer, Socket, type AddressInfo } from 'node:net';
import { Aedes } from 'aedes';
import { connectAsync, type IClientOptions, type MqttClient } from 'mqtt';
import { chunkArtifact, type ArtifactDescriptor } from '../../../shared/manifest/index.js';
import { topics } from '../../../shared/protocol/index.js';

/** A broker under test: the embedded aedes (always) or the local Mosquitto (when it answers). */
export interface TestBroker {
  name: string;
  url: string;
  close(): Promise<void>;
}

export async function startAedes(): Promise<TestBroker> {
  const broker = await Aedes.createBroker();
  const server = createServer(broker.handle);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    name: 'aedes',
    url: `mqtt://127.0.0.1:${port}`,
    close: async () => {
      await new Promise<void>((r) => broker.close(() => r()));
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

export const MOSQUITTO_URL = 'mqtt://127.0.0.1:1883';

export function mosquittoReachable(timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const s = new Socket();
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(timeoutMs, () => done(false));
    s.once('error', () => done(false));
    s.connect(1883, '127.0.0.1', () => done(true));
  });
}

export async function connectMosquitto(): Promise<TestBroker> {
  return { name: 'mosquitto', url: MOSQUITTO_URL, close: async () => undefined };
}

export async function connectClient(url: string, opts: IClientOptions = {}): Promise<MqttClient> {
  return connectAsync(url, { clientId: `test-${randomBytes(6).toString('hex')}`, reconnectPeriod: 100, connectTimeout: 5000, ...opts });
}

/** Publishes an artifact's chunks, retained, QoS 1, as the cloud publisher does. Returns the topics written. */
export async function publishChunks(client: MqttClient, bytes: Buffer, artifact: ArtifactDescriptor, which?: Iterable<number>, tamper?: (i: number, c: Buffer) => Buffer): Promise<string[]> {
  const chunks = chunkArtifact(bytes, artifact.chunkSize);
  const indices = which ? [...which] : chunks.map((_, i) => i);
  const out: string[] = [];
  for (const i of indices) {
    const topic = topics.artifactChunk(artifact.sha256, i);
    const data = tamper ? tamper(i, Buffer.from(chunks[i] ?? Buffer.alloc(0))) : chunks[i]!;
    await client.publishAsync(topic, data, { qos: 1, retain: true });
    out.push(topic);
  }
  return out;
}

/** Clears retained messages (an empty retained publish), so a persistent broker does not keep test data. */
export async function clearRetained(client: MqttClient, topicList: Iterable<string>): Promise<void> {
  for (const t of new Set(topicList)) await client.publishAsync(t, Buffer.alloc(0), { qos: 1, retain: true });
}
