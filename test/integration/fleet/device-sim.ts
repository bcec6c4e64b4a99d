/**
 * A minimal device for fleet integration tests: what an edge daemon does on the wire, no model.
 * It reads the retained desired state, verifies it, fetches and checks the retained chunks, then
 * reports installed + status + telemetry (or rejects, when told to), and, with `commitAfterMs`, the
 * `committed` event a daemon sends once the release passed its health window (edge/daemon.ts onCommitted).
 * `hold()` keeps it from acting on desired states (a slow link) until `release()`.
 */
import mqtt, { type MqttClient } from 'mqtt';
import { sha256Of, verifyManifest, type TrustedKey } from '../../../shared/manifest/index.js';
import { encodePayload, eventSchema, parseTopic, topics, PROTOCOL_VERSION, type DeviceEvent, type Manifest } from '../../../shared/protocol/index.js';
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

export interface SimDeviceOptions {
  /** Its statuses are protocol 2 and declare these (as a current daemon's). */
  capabilities?: readonly string[];
  /** It starts on this release. */
  running?: { release: number; sha256: string };
  /** Its own broker login (a provisioned bundle's `mqtt.username` / `password`) and client id (default `dev-{id}`). */
  login?: { username: string; password: string; clientId?: string };
  /** Sends `committed` this long after `installed` (a daemon's health window); none without it. */
  commitAfterMs?: number;
}

export class SimDevice {
  installed: number[] = [];
  /** Verification failures (e.g. a retained desired state signed by another test's key). */
  refused: string[] = [];
  rejectRelease: number | undefined;
  /** Every event it published, in order. */
  readonly events: DeviceEvent[] = [];
  private held: Buffer[] | undefined;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly installing = new Set<number>();

  private constructor(
    readonly id: string,
    readonly client: MqttClient,
    private readonly trusted: TrustedKey[],
    private readonly capabilities?: readonly string[],
    private readonly commitAfterMs?: number,
  ) {}

  static async connect(url: string, id: string, trusted: TrustedKey[], { capabilities, running, login, commitAfterMs }: SimDeviceOptions = {}): Promise<SimDevice> {
    const client = await connectClient(url, login?.clientId ?? `dev-${id}`, {
      will: { topic: topics.status(id), payload: statusPayload(id, null, null, 'offline'), qos: 1, retain: true },
      ...(login ? { username: login.username, password: login.password } : {}),
    });
    const d = new SimDevice(id, client, trusted, capabilities, commitAfterMs);
    await client.publishAsync(topics.status(id), d.status(running?.release ?? null, running?.sha256 ?? null), { qos: 1, retain: true });
    client.on('message', (topic, payload) => {
      if (topic !== topics.desired(id) || payload.byteLength === 0) return;
      if (d.held) d.held.push(payload);
      else d.onDesired(payload).catch((err: Error) => d.refused.push(err.message));
    });
    await client.subscribeAsync(topics.desired(id), { qos: 1 });
    return d;
  }

  /** Desired states arriving from now on wait (received, not acted on) until `release()`. */
  hold(): void {
    this.held ??= [];
  }

  /** Acts on the desired states that arrived while held, in order. */
  async release(): Promise<void> {
    const waiting = this.held ?? [];
    this.held = undefined;
    for (const p of waiting) await this.onDesired(p).catch((err: Error) => this.refused.push(err.message));
  }

  /** Desired states received while held (not acted on yet). */
  get waiting(): number {
    return this.held?.length ?? 0;
  }

  private async publishEvent(type: DeviceEvent['type'], m: Manifest): Promise<void> {
    const ev: DeviceEvent = { v: PROTOCOL_VERSION, deviceId: this.id, at: new Date().toISOString(), type, model: m.model, release: m.release, sha256: m.artifact.sha256 };
    await this.client.publishAsync(topics.events(this.id), encodePayload(eventSchema, ev), { qos: 1 });
    this.events.push(ev);
  }

  private async onDesired(payload: Buffer): Promise<void> {
    const v = verifyManifest(payload, this.trusted);
    if (!v.ok) {
      this.refused.push(v.reason);
      return;
    }
    const m = v.manifest;
    // A desired state sent again (a new leader republishes it) while this one is still being fetched is the same release.
    if (this.installed.includes(m.release) || this.installing.has(m.release)) return;
    if (m.release === this.rejectRelease) {
      await this.client.publishAsync(topics.events(this.id), eventPayload(this.id, 'rejected', m.release, 'self_test_failed'), { qos: 1 });
      return;
    }
    this.installing.add(m.release);
    try {
      await fetchArtifact(this.client, m);
    } finally {
      this.installing.delete(m.release);
    }
    this.installed.push(m.release);
    // What the daemon sends after an install (edge/daemon.ts emitEvent): the event, the retained status, telemetry.
    await this.publishEvent('installed', m);
    await this.client.publishAsync(topics.status(this.id), this.status(m.release, m.artifact.sha256), { qos: 1, retain: true });
    await this.client.publishAsync(topics.telemetry(this.id), telemetryPayload(this.id, m.release, 'ok'), { qos: 0 });
    if (this.commitAfterMs === undefined) return;
    const t = setTimeout(() => {
      this.timers.delete(t);
      void this.publishEvent('committed', m).catch((err: Error) => this.refused.push(`committed: ${err.message}`));
    }, this.commitAfterMs);
    this.timers.add(t);
  }

  private status(release: number | null, sha256: string | null): Buffer {
    const plain = statusPayload(this.id, release, sha256);
    if (!this.capabilities) return plain;
    return Buffer.from(JSON.stringify({ ...(JSON.parse(plain.toString()) as object), protocolVersion: 2, capabilities: this.capabilities }));
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    await this.client.endAsync(true);
  }
}
