import { EventEmitter } from 'node:events';
import type { Statement } from 'better-sqlite3';
import { eq } from 'drizzle-orm';
import { Counter, Registry as PromRegistry } from 'prom-client';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import {
  PayloadError,
  decodePayload,
  eventSchema,
  examplesBatchSchema,
  statusSchema,
  telemetrySchema,
  type DeviceEvent,
  type DeviceTopicKind,
  type Status,
  type Telemetry,
} from '../../shared/protocol/index.js';
import type { Registry } from '../registry/db.js';
import { devices } from '../registry/schema.js';
import type { DeviceMessage, DeviceSubscriber } from './mqtt.js';
import { applyDeviceEvent, type AppliedEvent } from '../rollouts/store.js';

/** In-process signals for the rollout engine, emitted after the DB was updated. */
export interface FleetSignalMap {
  status: [{ deviceId: string; status: Status; retain: boolean; wentOnline: boolean }];
  telemetry: [{ deviceId: string; telemetry: Telemetry }];
  event: [{ deviceId: string; event: DeviceEvent; applied: AppliedEvent | null }];
}
/** What the rollout engine listens to (an `Ingest` is one). */
export type FleetSignals = Pick<EventEmitter<FleetSignalMap>, 'on' | 'off'>;

export interface IngestDeps {
  registry: Registry;
  /** Where device messages come from; without it, feed `handleMessage()` yourself. */
  mqtt?: DeviceSubscriber;
  log?: Logger;
  /** Prometheus registry for the counters; a private one by default. */
  metrics?: PromRegistry;
  now?: () => Date;
  /** Example batches arriving within this window share one transaction; default 5 ms. */
  flushMs?: number;
  /** Flush at once when this many example rows wait; default 4096. */
  maxPendingRows?: number;
}

export interface IngestStats {
  examplesInserted: number;
  /** Examples whose UUID was already stored (redelivered batches). */
  duplicates: number;
  /** Messages that failed decoding or validation, or named another device than their topic. */
  malformed: number;
  /** Messages from devices that are not provisioned or are revoked. */
  unknownDevice: number;
  /** Example batches accepted. */
  batches: number;
  /** Example rows lost to a failed transaction (logged). */
  dropped: number;
  flushes: number;
}

type ExampleRowValues = [string, string, string | null, number | null, Buffer, string, string, number | null, string, string];

const INSERT_EXAMPLE = `INSERT INTO examples (id, device_id, model, release_seq, input, student_output, reason, label, captured_at, ingested_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING`;

function metric<T>(registry: PromRegistry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

/**
 * Consumes status / telemetry / events / examples of every device. Every payload goes through
 * `decodePayload` and its strict schema; anything wrong is counted and logged, never thrown
 * (STYLE.md 5). Examples are idempotent by UUID (DESIGN.md "Cloud rules"): `ON CONFLICT(id) DO
 * NOTHING`, so a redelivered batch adds nothing.
 *
 * Delivery: MQTT.js sends PUBACK once the message handler returned, and batches are committed at
 * most `flushMs` later; a crash inside that window loses those batches (the device has already
 * deleted them). The window is bounded by `flushMs` and `maxPendingRows`; the DB write itself is
 * synchronous, so the buffer never grows past `maxPendingRows`.
 */
export class Ingest extends EventEmitter<FleetSignalMap> implements FleetSignals {
  private readonly log: Logger;
  private readonly now: () => Date;
  private readonly flushMs: number;
  private readonly maxPendingRows: number;
  private counters: { messages: Counter<'kind' | 'result'>; examples: Counter<'result'> } | undefined;
  private readonly s: IngestStats = { examplesInserted: 0, duplicates: 0, malformed: 0, unknownDevice: 0, batches: 0, dropped: 0, flushes: 0 };
  private pending: ExampleRowValues[] = [];
  private timer: NodeJS.Timeout | undefined;
  private unsubscribers: (() => void)[] = [];
  private insert: Statement<ExampleRowValues> | undefined;
  private lookup: Statement<[string], { revoked: number }> | undefined;
  private readonly warnedUnknown = new Set<string>();

  constructor(private readonly deps: IngestDeps) {
    super();
    this.log = deps.log ?? silentLogger;
    this.now = deps.now ?? (() => new Date());
    this.flushMs = deps.flushMs ?? 5;
    this.maxPendingRows = deps.maxPendingRows ?? 4096;
  }

  static async create(deps: IngestDeps): Promise<Ingest> {
    const i = new Ingest(deps);
    await i.start();
    return i;
  }

  async start(): Promise<void> {
    if (this.insert) return;
    const registers = [this.deps.metrics ?? new PromRegistry()];
    const reg = registers[0]!;
    this.counters = {
      messages: metric(reg, 'apprentice_cloud_ingest_messages_total', () => new Counter({ name: 'apprentice_cloud_ingest_messages_total', help: 'Device messages received, by topic kind and result (accepted, malformed, unknown_device, ignored)', labelNames: ['kind', 'result'] as const, registers })),
      examples: metric(reg, 'apprentice_cloud_ingest_examples_total', () => new Counter({ name: 'apprentice_cloud_ingest_examples_total', help: 'Hard examples by result (inserted, duplicate, dropped)', labelNames: ['result'] as const, registers })),
    };
    const sqlite = this.deps.registry.sqlite;
    // Hot path: one prepared statement, not a query builder per row.
    this.insert = sqlite.prepare<ExampleRowValues>(INSERT_EXAMPLE);
    this.lookup = sqlite.prepare<[string], { revoked: number }>('SELECT revoked FROM devices WHERE id = ?');
    const mqtt = this.deps.mqtt;
    if (!mqtt) return;
    const handler = (m: DeviceMessage): void => this.handleMessage(m.kind, m.deviceId, m.payload, m.retain);
    this.unsubscribers = [
      // Status is retained and its handling idempotent: a plain subscription, because brokers do not
      // send retained messages to a new shared subscription (MQTT 5 §4.8.2), and every replica may
      // apply it. The other kinds follow the client's sharedSubscriptions switch.
      mqtt.onDevice('status', handler, { shared: false }),
      mqtt.onDevice('telemetry', handler),
      mqtt.onDevice('events', handler),
      mqtt.onDevice('examples', handler),
    ];
  }

  /** Unsubscribes and commits what is buffered. */
  async stop(): Promise<void> {
    for (const u of this.unsubscribers) u();
    this.unsubscribers = [];
    this.flush();
    this.insert = undefined;
    this.lookup = undefined;
  }

  dispose(): Promise<void> {
    return this.stop();
  }

  stats(): IngestStats {
    return { ...this.s };
  }

  /** Handles one message from `devices/{deviceId}/{kind}`; never throws. */
  handleMessage(kind: DeviceTopicKind, deviceId: string, payload: Buffer, retain = false): void {
    try {
      if (kind === 'desired') return;
      // An empty retained publish clears a retained status ([MQTT-3.3.1-10]); not a message.
      if (payload.byteLength === 0 && kind === 'status') return this.count(kind, 'ignored');
      if (!this.known(deviceId)) {
        this.s.unknownDevice++;
        this.count(kind, 'unknown_device');
        if (this.warnedUnknown.size < 1000 && !this.warnedUnknown.has(deviceId)) {
          this.warnedUnknown.add(deviceId);
          this.log.warn({ deviceId, kind }, 'ingest/unknown-device');
        }
        return;
      }
      switch (kind) {
        case 'examples':
          return this.onExamples(deviceId, payload);
        case 'status':
          return this.onStatus(deviceId, payload, retain);
        case 'telemetry':
          return this.onTelemetry(deviceId, payload);
        case 'events':
          return this.onEvent(deviceId, payload);
      }
    } catch (err) {
      if (err instanceof PayloadError) {
        this.s.malformed++;
        this.count(kind, 'malformed');
        this.log.warn({ deviceId, kind, reason: err.message.slice(0, 500) }, 'ingest/malformed');
        return;
      }
      this.log.error({ err, deviceId, kind }, 'ingest/handler-failed');
    }
  }

  /** Commits the buffered example rows in one transaction. Synchronous (better-sqlite3). */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const rows = this.pending;
    if (rows.length === 0 || !this.insert) return;
    this.pending = [];
    const insert = this.insert;
    const ingestedAt = this.now().toISOString();
    try {
      const inserted = this.deps.registry.sqlite.transaction(() => {
        let n = 0;
        for (const r of rows) {
          r[9] = ingestedAt;
          n += insert.run(...r).changes;
        }
        return n;
      })();
      this.s.flushes++;
      this.s.examplesInserted += inserted;
      this.s.duplicates += rows.length - inserted;
      this.counters?.examples.inc({ result: 'inserted' }, inserted);
      if (rows.length > inserted) this.counters?.examples.inc({ result: 'duplicate' }, rows.length - inserted);
    } catch (err) {
      this.s.dropped += rows.length;
      this.counters?.examples.inc({ result: 'dropped' }, rows.length);
      this.log.error({ err, rows: rows.length }, 'ingest/flush-failed');
    }
  }

  private known(deviceId: string): boolean {
    const r = this.lookup?.get(deviceId);
    return r !== undefined && !r.revoked;
  }

  private count(kind: string, result: string): void {
    this.counters?.messages.inc({ kind, result });
  }

  private checkDevice(topicId: string, payloadId: string): void {
    // A device may only speak for itself: the broker ACL binds topics to credentials, not payloads.
    if (topicId !== payloadId) throw new PayloadError(`deviceId "${payloadId}" does not match the topic's device "${topicId}"`);
  }

  private onExamples(deviceId: string, payload: Buffer): void {
    const batch = decodePayload(examplesBatchSchema, payload);
    this.checkDevice(deviceId, batch.deviceId);
    const rows: ExampleRowValues[] = [];
    for (const ex of batch.examples) {
      // Stored as the little-endian float32 bytes the device sent: no Float32Array round trip.
      const input = Buffer.from(ex.input, 'base64');
      if (input.byteLength === 0 || input.byteLength % 4 !== 0) throw new PayloadError(`example ${ex.id}: input has ${input.byteLength} bytes, not a non-empty multiple of 4`);
      rows.push([ex.id, deviceId, ex.model, ex.release, input, JSON.stringify(ex.output), ex.reason, ex.label ?? null, ex.at, '']);
    }
    for (const r of rows) this.pending.push(r);
    this.s.batches++;
    this.count('examples', 'accepted');
    if (this.pending.length >= this.maxPendingRows) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), this.flushMs);
  }

  /** Device clocks may run ahead: never record a last-seen time in the future. */
  private seenAt(at: string): string {
    const now = this.now();
    return Date.parse(at) > now.getTime() ? now.toISOString() : new Date(at).toISOString();
  }

  private onStatus(deviceId: string, payload: Buffer, retain: boolean): void {
    const status = decodePayload(statusSchema, payload);
    this.checkDevice(deviceId, status.deviceId);
    const db = this.deps.registry.db;
    const before = db.select({ online: devices.online }).from(devices).where(eq(devices.id, deviceId)).get();
    const online = status.state === 'online';
    db.update(devices)
      .set({
        online,
        lastSeen: this.seenAt(status.at),
        // The offline status is the last will, composed when the device connected: its running
        // release may be stale, so only an online status says what runs.
        // Protocol fields too: a daemon downgraded to protocol 1 sends none and must get today's fields again.
        ...(online
          ? {
              runningSeq: status.release,
              runningSha256: status.sha256,
              protocolVersion: status.protocolVersion ?? null,
              capabilities: status.capabilities ?? null,
              trust: status.trust ?? null,
              degraded: status.degraded ?? null,
            }
          : {}),
      })
      .where(eq(devices.id, deviceId))
      .run();
    this.count('status', 'accepted');
    this.signal('status', { deviceId, status, retain, wentOnline: online && !before?.online });
  }

  private onTelemetry(deviceId: string, payload: Buffer): void {
    const telemetry = decodePayload(telemetrySchema, payload);
    this.checkDevice(deviceId, telemetry.deviceId);
    this.deps.registry.db.update(devices).set({ lastTelemetry: telemetry, lastSeen: this.seenAt(telemetry.at) }).where(eq(devices.id, deviceId)).run();
    this.count('telemetry', 'accepted');
    this.signal('telemetry', { deviceId, telemetry });
  }

  private onEvent(deviceId: string, payload: Buffer): void {
    const event = decodePayload(eventSchema, payload);
    this.checkDevice(deviceId, event.deviceId);
    const db = this.deps.registry.db;
    const applied = db.transaction((tx) => {
      tx.update(devices).set({ lastSeen: this.seenAt(event.at) }).where(eq(devices.id, deviceId)).run();
      return applyDeviceEvent(tx, event, this.now());
    });
    this.count('events', 'accepted');
    this.log.info({ deviceId, type: event.type, release: event.release, reason: event.reason, rollout: applied?.rolloutId }, 'ingest/device-event');
    this.signal('event', { deviceId, event, applied });
  }

  private signal<K extends keyof FleetSignalMap>(name: K, ...args: FleetSignalMap[K]): void {
    try {
      (this.emit as (n: K, ...a: FleetSignalMap[K]) => boolean)(name, ...args);
    } catch (err) {
      this.log.error({ err, signal: name }, 'ingest/listener-failed');
    }
  }
}
