/**
 * A minimal device for fleet integration tests: what an edge daemon does on the wire, no model.
 * It reads the retained desired state, verifies it, fetches and checks the retained chunks, then
 * reports installed + status + telemetry (or rejects, when told to).
 */
import mqtt, { type MqttClient } from 'mqtt';
import { sha256Of, verifyManifest, type TrustedKey } from '../../../shared/manifest/index.js';
import { parseTopic, topics, type Manifest } from '../../../shared/protocol/index.js';
import { eventPayload, statusPayload, telemetryPayload } from '../../unit/fleet/fixtures.js';

export function connectClient(url: string, clientId: string, opts: mqtt.IClientOptions = {}): Promise<MqttClient> {
  const c = mqtt.connect(url, { clientId, clean: true, reconnectPeriod: 100, connectTimeout: 5000, ...opts });
  return new Promise((resolve, reject) => {
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });
}

/** Collects every message on `filter` (retained ones included) until `done` says enough. */
export async function collect(client: MqttClient, filter: string, done: (msgs: { topic: string; payload: Buffer }[]) => boolean, timeoutMs = 5000): Promise<{ topic: string; payload: Buffer }[]> {
  const msgs: { topic: string; payload: Buffer }[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => finish(new Error(`collect ${filter}: ${msgs.length} messages after ${timeoutMs} ms`)), timeoutMs);
    const onMessage = (topic: string, payload: Buffer): void => {
      if (!matches(filter, topic)) return;
      msgs.push({ topic, payload });
      if (done(msgs)) finish();
    };
    const finish = (err?: Error): void => {
      clearTimeout(timer);
      client.off('message', onMessage);
      client.unsubscribe(filter);
      if (err) reject(err);
      else resolve(msgs);
    };
    client.on('message', onMessage);
    client.subscribe(filter, { qos: 1 });
  });
}

function matches(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  return f.length === t.length && f.every((p, i) => p === '+' || p === t[i]);
}

/** Fetches an artifact's retained chunks, checking each against the manifest; returns the bytes. */
export async function fetchArtifact(client: MqttClient, m: Manifest): Promise<Buffer> {
  const n = m.artifact.chunks.length;
  const msgs = await collect(client, topics.artifactChunks(m.artifact.sha256), (ms) => new Set(ms.map((x) => x.topic)).size >= n);
  const parts: Buffer[] = new Array(n);
  for (const { topic, payload } of msgs) {
    const t = parseTopic(topic);
    if (t?.type !== 'artifact') throw new Error(`not a chunk topic: ${topic}`);
    if (sha256Of(payload) !== m.artifact.chunks[t.index]) throw new Error(`chunk ${t.index} hash mismatch`);
    parts[t.index] = payload;
  }
  const bytes = Buffer.concat(parts);
  if (bytes.byteLength !== m.artifact.bytes || sha256Of(bytes) !== m.artifact.sha256) throw new Error('artifact hash or length mismatch');
  return bytes;
}

export class SimDevice {
  installed: number[] = [];
  /** Verification failures (e.g. a retained desired state signed by another test's key). */
  refused: string[] = [];
  rejectRelease: number | undefined;

  private constructor(
    readonly id: string,
    readonly client: MqttClient,
    private readonly trusted: TrustedKey[],
    private readonly capabilities?: readonly string[],
  ) {}

  /** With `capabilities`, its statuses are protocol 2 and declare them (as a current daemon's); with `running`, it starts on that release. */
  static async connect(url: string, id: string, trusted: TrustedKey[], { capabilities, running }: { capabilities?: readonly string[]; running?: { release: number; sha256: string } } = {}): Promise<SimDevice> {
    const client = await connectClient(url, `dev-${id}`, {
      will: { topic: topics.status(id), payload: statusPayload(id, null, null, 'offline'), qos: 1, retain: true },
    });
    const d = new SimDevice(id, client, trusted, capabilities);
    await client.publishAsync(topics.status(id), d.status(running?.release ?? null, running?.sha256 ?? null), { qos: 1, retain: true });
    client.on('message', (topic, payload) => {
      if (topic === topics.desired(id) && payload.byteLength > 0) d.onDesired(payload).catch((err: Error) => d.refused.push(err.message));
    });
    await client.subscribeAsync(topics.desired(id), { qos: 1 });
    return d;
  }

  private async onDesired(payload: Buffer): Promise<void> {
    const v = verifyManifest(payload, this.trusted);
    if (!v.ok) {
      this.refused.push(v.reason);
      return;
    }
    const m = v.manifest;
    if (this.installed.includes(m.release)) return;
    if (m.release === this.rejectRelease) {
      await this.client.publishAsync(topics.events(this.id), eventPayload(this.id, 'rejected', m.release, 'self_test_failed'), { qos: 1 });
      return;
    }
    await fetchArtifact(this.client, m);
    this.installed.push(m.release);
    await this.client.publishAsync(topics.events(this.id), eventPayload(this.id, 'installed', m.release), { qos: 1 });
    await this.client.publishAsync(topics.status(this.id), this.status(m.release, m.artifact.sha256), { qos: 1, retain: true });
    await this.client.publishAsync(topics.telemetry(this.id), telemetryPayload(this.id, m.release, 'ok'), { qos: 0 });
  }

  private status(release: number | null, sha256: string | null): Buffer {
    const plain = statusPayload(this.id, release, sha256);
    if (!this.capabilities) return plain;
    return Buffer.from(JSON.stringify({ ...(JSON.parse(plain.toString()) as object), protocolVersion: 2, capabilities: this.capabilities }));
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }
}
