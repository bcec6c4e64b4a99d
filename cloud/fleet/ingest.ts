import { EventEmitter } from 'node:events';
import { eq } from 'drizzle-orm';
import { Counter, Registry as PromRegistry } from 'prom-client';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import {
  PayloadError,
  PROTOCOL_VERSION,
  decodePayload,
  eventSchema,
  type Receipt,
  statusSchema,
  telemetrySchema,
  type DeviceEvent,
  type DeviceTopicKind,
  type Status,
  type Telemetry,
} from '../../shared/protocol/index.js';
import type { StoreRegistry } from '../registry/open.js';
import { q } from '../registry/tx.js';
import { DeviceStateWriter } from './device-state-writer.js';
import { deviceEventInput, deviceEventSteps } from './events-store.js';
import { parseExampleBatch } from './example-batch.js';
import { IngestCounts, type DeviceIngestCounts } from './ingest-counts.js';
import { SerialRetry, isTransientDbError } from './serial-retry.js';
import { createBackoff } from '../../edge/outbox/backoff.js';
import { ExampleCommitter, type CommitStats, type ExampleRowValues } from './example-commit.js';
import type { ReceiptSender } from './receipts.js';
import type { DeviceMessage, DeviceSubscriber } from './mqtt.js';
import { applyDeviceEventSteps, type AppliedEvent } from '../rollouts/store.js';

/** In-process signals for the rollout engine, emitted after the DB was updated. */
export interface FleetSignalMap {
  status: [{ deviceId: string; status: Status; retain: boolean; wentOnline: boolean }];
  telemetry: [{ deviceId: string; telemetry: Telemetry }];
  event: [{ deviceId: string; event: DeviceEvent; applied: AppliedEvent | null }];
}
/** What the rollout engine listens to (an `Ingest` is one). */
export type FleetSignals = Pick<EventEmitter<FleetSignalMap>, 'on' | 'off'>;

export interface IngestDeps {
  registry: StoreRegistry;
  /** Where device messages come from; without it, feed `handleMessage()` yourself. */
  mqtt?: DeviceSubscriber;
  log?: Logger;
  /** Prometheus registry for the counters; a private one by default. */
  metrics?: PromRegistry;
  now?: () => Date;
  /** Example batches arriving within this window share one transaction; default 0 (the next tick). */
  flushMs?: number;
  /** At most this many example rows wait uncommitted; past it a batch waits (backpressure). Default 4096. */
  maxPendingRows?: number;
  /** Status and telemetry writes within this window share one transaction; default 250 ms. */
  stateFlushMs?: number;
  /**
   * Sends a device its receipt after the commit (createReceiptSender); without it no receipts are sent.
   * Called from inside the message handler: it must not wait.
   */
  receipts?: ReceiptSender;
  /**
   * Rate caps and quotas (the trust engineer's hook): of these example ids, which to defer and for how
   * many seconds. Deferred examples are not stored; the device keeps them and sends them later.
   */
  admit?: (deviceId: string, ids: readonly string[]) => ReadonlyMap<string, number>;
  /** Fault drills: runs before each example commit attempt. */
  beforeCommit?: () => void;
  /** Fault drills: runs after each example commit, before any ack or receipt (the ack window). */
  afterCommit?: () => void;
}

export interface IngestStats {
  examplesInserted: number;
  /** Examples whose UUID was already stored (redelivered or resent batches). */
  duplicates: number;
  /** Of `duplicates`, those found stored before the commit (no transaction spent on them). */
  duplicatesSkipped: number;
  /** Messages that failed decoding or validation, or named another device than their topic. */
  malformed: number;
  /** Messages from devices that are not provisioned or are revoked. */
  unknownDevice: number;
  /** Example batches accepted. */
  batches: number;
  /** Example rows lost for good. Always 0: a failed commit is retried, never dropped (kept for dashboards). */
  dropped: number;
  /** Failed example commits (each retried). */
  failedCommits: number;
  /** Times a batch waited for `maxPendingRows` room. */
  backpressureWaits: number;
  flushes: number;
}

export { OTHER_DEVICES, type DeviceIngestCounts } from './ingest-counts.js';

/** A handled message: `done` settles once its work is durable (acknowledge then); none, acknowledge at once. */
interface Outcome {
  done?: Promise<void> | undefined;
}

/** A device's registration as ingest sees it; `stopped`: not known, ingest stopped while the registry was unreachable. */
type Registration = 'ok' | 'unknown' | 'revoked' | 'stopped';

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

function metric<T>(registry: PromRegistry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

/**
 * Consumes status / telemetry / events / examples of every device. Every payload goes through
 * `decodePayload` and its strict schema; anything wrong is counted and logged, never thrown
 * (STYLE.md 5). Examples are idempotent by UUID (DESIGN.md "Cloud rules"): `ON CONFLICT(id) DO
 * NOTHING`, so a redelivered batch adds nothing.
 *
 * Delivery (issue 9): `handleMessage` returns, for an example batch, a promise that settles only once
 * its rows are committed, and `CloudMqtt` sends the PUBACK only then. A failed commit is retried in
 * process (ExampleCommitter), never dropped. Status and telemetry are batched (DeviceStateWriter) and
 * acknowledged at once: both come back by themselves after a crash. Device events are committed
 * before their handler returns.
 */
export class Ingest extends EventEmitter<FleetSignalMap> implements FleetSignals {
  private readonly log: Logger;
  private readonly now: () => Date;
  private counters: { messages: Counter<'kind' | 'result'>; examples: Counter<'result'>; state: Counter<'result'> } | undefined;
  private readonly s = { malformed: 0, unknownDevice: 0, batches: 0 };
  private unsubscribers: (() => void)[] = [];
  private committer: ExampleCommitter | undefined;
  private writer: DeviceStateWriter | undefined;
  private events: SerialRetry | undefined;
  private started = false;
  /**
   * The last accepted message's handling: each message's registration is looked up at once (concurrently on
   * PostgreSQL), but handled only after the one before it, so a device's messages apply in arrival order.
   */
  private handled: Promise<unknown> = Promise.resolve();
  private readonly warnedUnknown = new Set<string>();
  /** Per-device deferred / refused / ignored-label counts, persisted (issue 10). */
  private readonly perDevice: IngestCounts;
  /** Commit figures kept across stop(), so stats() still reads after it. */
  private lastCommitStats: CommitStats = { inserted: 0, duplicates: 0, duplicatesSkipped: 0, flushes: 0, failedCommits: 0, backpressureWaits: 0 };

  constructor(private readonly deps: IngestDeps) {
    super();
    this.log = deps.log ?? silentLogger;
    this.now = deps.now ?? (() => new Date());
    this.perDevice = new IngestCounts({ registry: deps.registry, now: this.now, log: this.log });
  }

  static async create(deps: IngestDeps): Promise<Ingest> {
    const i = new Ingest(deps);
    await i.start();
    return i;
  }

  /** Prepares the statements and registers the handlers (do it before the MQTT client connects). */
  async start(): Promise<void> {
    if (this.committer) return;
    this.started = true;
    const registers = [this.deps.metrics ?? new PromRegistry()];
    const reg = registers[0]!;
    this.counters = {
      messages: metric(reg, 'apprentice_cloud_ingest_messages_total', () => new Counter({ name: 'apprentice_cloud_ingest_messages_total', help: 'Device messages received, by topic kind and result (accepted, malformed, unknown_device, ignored, retried: a failed write or registration read tried again before the ack, failed: an event write not retryable)', labelNames: ['kind', 'result'] as const, registers })),
      examples: metric(reg, 'apprentice_cloud_ingest_examples_total', () => new Counter({ name: 'apprentice_cloud_ingest_examples_total', help: 'Hard examples by result (inserted, duplicate, label_ignored: a label on a non-feedback row), failed commits (commit_failed, retried) and batches that waited for room (backpressure)', labelNames: ['result'] as const, registers })),
      state: metric(reg, 'apprentice_cloud_ingest_device_state_total', () => new Counter({ name: 'apprentice_cloud_ingest_device_state_total', help: 'Batched status/telemetry writes by result (committed, commit_failed, dropped_status, dropped_telemetry)', labelNames: ['result'] as const, registers })),
    };
    const { registry } = this.deps;
    await this.perDevice.load();
    this.committer = new ExampleCommitter({
      registry,
      log: this.log,
      now: this.now,
      counter: this.counters.examples,
      flushMs: this.deps.flushMs ?? 0,
      maxPendingRows: this.deps.maxPendingRows ?? 4096,
      ...(this.deps.beforeCommit ? { beforeCommit: this.deps.beforeCommit } : {}),
      ...(this.deps.afterCommit ? { afterCommit: this.deps.afterCommit } : {}),
    });
    this.writer = new DeviceStateWriter({
      registry,
      log: this.log,
      counter: this.counters.state,
      flushMs: this.deps.stateFlushMs ?? 250,
      onCommitted: (ops) => {
        for (const { op, status } of ops) {
          if (status) this.signal('status', status);
          else if (op.kind === 'telemetry') this.signal('telemetry', { deviceId: op.deviceId, telemetry: op.telemetry });
        }
      },
    });
    this.events = new SerialRetry({ log: this.log, what: 'ingest/device-event', onRetry: () => this.count('events', 'retried') });
    const mqtt = this.deps.mqtt;
    if (!mqtt) return;
    const handler = (m: DeviceMessage): Promise<void> | undefined => this.handleMessage(m.kind, m.deviceId, m.payload, m.retain);
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

  /** Unsubscribes and commits what is buffered (rows that still fail were never acknowledged). */
  async stop(): Promise<void> {
    for (const u of this.unsubscribers) u();
    this.unsubscribers = [];
    this.started = false;
    await this.handled.catch(() => undefined);
    await this.committer?.stop();
    if (this.committer) this.lastCommitStats = this.committer.stats();
    await this.writer?.stop();
    await this.perDevice.flush();
    this.events?.stop();
    this.events = undefined;
    this.committer = undefined;
    this.writer = undefined;
  }

  dispose(): Promise<void> {
    return this.stop();
  }

  stats(): IngestStats {
    const c = this.committer?.stats() ?? this.lastCommitStats;
    return { ...this.s, examplesInserted: c.inserted, duplicates: c.duplicates, duplicatesSkipped: c.duplicatesSkipped, flushes: c.flushes, failedCommits: c.failedCommits, backpressureWaits: c.backpressureWaits, dropped: 0 };
  }

  /** Deferred / refused / ignored-label counts per device, across restarts (the registry's plus this process's). */
  deviceCounts(): Record<string, DeviceIngestCounts> {
    return this.perDevice.snapshot();
  }

  private tally(deviceId: string, what: keyof DeviceIngestCounts, n: number): void {
    this.perDevice.add(deviceId, what, n);
  }

  /** Example rows accepted and not yet committed. */
  uncommitted(): number {
    return this.committer?.uncommitted() ?? 0;
  }

  /**
   * Handles one message from `devices/{deviceId}/{kind}`; never rejects. The promise settles once the
   * message was handled: for an accepted example batch, once its rows are committed, for a device event
   * once it is written. Acknowledge only then.
   */
  handleMessage(kind: DeviceTopicKind, deviceId: string, payload: Buffer, retain = false): Promise<void> | undefined {
    if (kind === 'desired') return undefined;
    // An empty retained publish clears a retained status ([MQTT-3.3.1-10]); not a message.
    if (payload.byteLength === 0 && kind === 'status') return void this.count(kind, 'ignored');
    if (!this.started) return undefined;
    const state = this.registration(kind, deviceId);
    // Handled in arrival order; each message's outcome (e.g. its commit) is its own promise.
    // The next message is handled once this one is queued (its rows in the committer), not committed.
    const turn = Promise.all([state, this.handled]).then(([s]) => this.handleRegistered(kind, deviceId, payload, retain, s));
    this.handled = turn.catch(() => undefined);
    return turn.then(
      (o) => o.done,
      (err: unknown) => void this.log.error({ err, deviceId, kind }, 'ingest/handler-failed'),
    );
  }

  private handleRegistered(kind: Exclude<DeviceTopicKind, 'desired'>, deviceId: string, payload: Buffer, retain: boolean, state: Registration): Outcome | Promise<Outcome> {
    try {
      // Stopped while the registry was unreachable: never acknowledged, the broker sends it again.
      if (state === 'stopped') return { done: new Promise<void>(() => undefined) };
      if (state !== 'ok') {
        // A revoked device's examples are refused for good, so its outbox does not resend them for ever.
        if (kind === 'examples') this.refuseAll(deviceId, payload, state === 'revoked' ? 'revoked' : 'unknown_device');
        this.s.unknownDevice++;
        this.count(kind, 'unknown_device');
        if (this.warnedUnknown.size < 1000 && !this.warnedUnknown.has(deviceId)) {
          this.warnedUnknown.add(deviceId);
          this.log.warn({ deviceId, kind }, 'ingest/unknown-device');
        }
        return {};
      }
      switch (kind) {
        case 'examples':
          return this.onExamples(deviceId, payload);
        case 'status':
          this.onStatus(deviceId, payload, retain);
          return {};
        case 'telemetry':
          this.onTelemetry(deviceId, payload);
          return {};
        case 'events':
          return { done: this.onEvent(deviceId, payload) };
      }
    } catch (err) {
      if (err instanceof PayloadError) {
        this.s.malformed++;
        this.count(kind, 'malformed');
        this.log.warn({ deviceId, kind, reason: err.message.slice(0, 500) }, 'ingest/malformed');
        return {};
      }
      this.log.error({ err, deviceId, kind }, 'ingest/handler-failed');
    }
    return {};
  }

  /**
   * Commits the buffered example rows and device state now, once the messages received so far were
   * handled; false if a commit failed (retried later).
   */
  async flush(): Promise<boolean> {
    await this.handled;
    const [a, b] = await Promise.all([this.committer?.flush() ?? true, this.writer?.flush() ?? true]);
    return a && b;
  }

  /** The batched status/telemetry writer (the console adds its telemetry history as a sink). */
  get deviceState(): DeviceStateWriter | undefined {
    return this.writer;
  }

  /**
   * Whether the device is provisioned and not revoked. A read failing with a transient error (a locked
   * SQLite, an unreachable PostgreSQL) is logged, counted (`retried`) and tried again with backoff: the
   * message is not acknowledged meanwhile, and after stop() never (`stopped`).
   */
  private async registration(kind: DeviceTopicKind, deviceId: string): Promise<Registration> {
    const { devices } = this.deps.registry.t;
    const backoff = createBackoff({ initialMs: 100, maxMs: 5_000 });
    for (;;) {
      try {
        const [r] = await this.deps.registry.q.select({ revoked: devices.revoked }).from(devices).where(eq(devices.id, deviceId));
        return r === undefined ? 'unknown' : r.revoked ? 'revoked' : 'ok';
      } catch (err) {
        if (!isTransientDbError(err)) throw err;
        const delay = backoff.next();
        this.count(kind, 'retried');
        this.log.error({ err, deviceId, kind, attempt: backoff.attempts, retryInMs: delay }, 'ingest/registration-read-failed: retrying (not acknowledged meanwhile)');
        if (this.started) await new Promise((r) => setTimeout(r, delay));
        if (!this.started) return 'stopped';
      }
    }
  }

  private receipt(deviceId: string, r: DistributiveOmit<Receipt, 'v' | 'deviceId' | 'at'>): void {
    this.deps.receipts?.(deviceId, { v: PROTOCOL_VERSION, deviceId, at: this.now().toISOString(), ...r } as Receipt);
  }

  private refuseAll(deviceId: string, payload: Buffer, reason: 'revoked' | 'unknown_device'): void {
    const p = parseExampleBatch(deviceId, payload);
    this.tally(deviceId, 'refused', p.ok ? p.rows.length + p.refused.length + p.unreadable : 1);
    if (!p.batchId) return;
    this.receipt(deviceId, { kind: 'batch', batchId: p.batchId, refused: { reason } });
  }

  private count(kind: string, result: string, n = 1): void {
    this.counters?.messages.inc({ kind, result }, n);
  }

  private checkDevice(topicId: string, payloadId: string): void {
    // A device may only speak for itself: the broker ACL binds topics to credentials, not payloads.
    if (topicId !== payloadId) throw new PayloadError(`deviceId "${payloadId}" does not match the topic's device "${topicId}"`);
  }

  /**
   * Validates each example on its own (issue 9): the valid ones are committed, the others refused with
   * their reason; the receipt goes out after the commit. A payload with no readable example id is
   * refused by its batch id.
   */
  private onExamples(deviceId: string, payload: Buffer): Outcome | Promise<Outcome> {
    const p = parseExampleBatch(deviceId, payload);
    const bad = p.ok ? p.refused.length + p.unreadable : 1;
    this.tally(deviceId, 'refused', bad);
    if (p.ok && p.labelsIgnored > 0) {
      this.tally(deviceId, 'labelsIgnored', p.labelsIgnored);
      this.counters?.examples.inc({ result: 'label_ignored' }, p.labelsIgnored);
      this.log.warn({ deviceId, batchId: p.batchId, labelsIgnored: p.labelsIgnored }, 'ingest/label-ignored: labels are accepted only on feedback rows');
    }
    if (p.ok && p.sourcesDropped > 0) {
      this.counters?.examples.inc({ result: 'source_dropped' }, p.sourcesDropped);
      this.log.warn({ deviceId, batchId: p.batchId, sourcesDropped: p.sourcesDropped }, 'ingest/source-dropped: a source image is not the PNG/JPEG it claims to be (the example is kept without it)');
    }
    if (bad > 0) {
      this.s.malformed += bad;
      this.count('examples', 'malformed', bad);
      this.log.warn({ deviceId, batchId: p.batchId, reason: p.ok ? p.refused[0]?.reason ?? 'malformed' : p.reason, detail: p.ok ? p.refused[0]?.detail : p.detail, bad }, 'ingest/malformed');
    }
    if (!p.ok) {
      if (p.batchId) this.receipt(deviceId, { kind: 'batch', batchId: p.batchId, refused: { reason: p.reason, detail: p.detail } });
      return {};
    }
    const committer = this.committer;
    if (!committer || p.rows.length === 0) return { done: this.store(deviceId, p, [], new Map()) };
    // One read for rows already stored (a redelivered batch, its PUBACK or receipt lost): they are not
    // queued again, nor charged against the rate cap; only new ones ask for room.
    return committer.unstored(p.rows).then((fresh) => {
      const deferred = this.deps.admit && fresh.length > 0 ? this.deps.admit(deviceId, fresh.map((r) => r[0])) : new Map<string, number>();
      return { done: this.store(deviceId, p, fresh, deferred) };
    });
  }

  /** Queues `fresh` (the batch's rows not stored yet) but the deferred ones; the receipt goes out after their commit. */
  private store(deviceId: string, p: Extract<ReturnType<typeof parseExampleBatch>, { ok: true }>, fresh: readonly ExampleRowValues[], deferred: ReadonlyMap<string, number>): Promise<void> | undefined {
    this.tally(deviceId, 'deferred', deferred.size);
    const rows = deferred.size ? p.rows.filter((r) => !deferred.has(r[0])) : p.rows;
    const entries = { stored: rows.map((r) => r[0]), refused: p.refused, deferred: [...deferred].map(([id, retryAfterSeconds]) => ({ id, retryAfterSeconds })) };
    if (entries.stored.length + entries.refused.length + entries.deferred.length === 0) {
      this.receipt(deviceId, { kind: 'batch', batchId: p.batchId, refused: { reason: 'malformed', detail: 'no readable example id' } });
      return undefined;
    }
    const receipt = (): void => this.receipt(deviceId, { kind: 'examples', batchId: p.batchId, ...entries });
    if (rows.length === 0 || !this.committer) {
      receipt();
      return undefined;
    }
    this.s.batches++;
    this.count('examples', 'accepted');
    // Receipt after the commit, PUBACK after the receipt was handed to MQTT.js.
    return this.committer.add(deferred.size ? fresh.filter((r) => !deferred.has(r[0])) : [...fresh]).then(receipt);
  }

  /** Device clocks may run ahead: never record a last-seen time in the future. */
  private seenAt(at: string): string {
    const now = this.now();
    return Date.parse(at) > now.getTime() ? now.toISOString() : new Date(at).toISOString();
  }

  private onStatus(deviceId: string, payload: Buffer, retain: boolean): void {
    const status = decodePayload(statusSchema, payload);
    this.checkDevice(deviceId, status.deviceId);
    this.writer?.push({ kind: 'status', deviceId, status, retain, lastSeen: this.seenAt(status.at) });
    this.count('status', 'accepted');
  }

  private onTelemetry(deviceId: string, payload: Buffer): void {
    const telemetry = decodePayload(telemetrySchema, payload);
    this.checkDevice(deviceId, telemetry.deviceId);
    this.writer?.push({ kind: 'telemetry', deviceId, telemetry, lastSeen: this.seenAt(telemetry.at) });
    this.count('telemetry', 'accepted');
  }

  /**
   * Applies a device event once its write is durable (issue 9): the PUBACK waits for the returned
   * promise. A locked or failing registry is retried in order (SerialRetry), never acknowledged before;
   * an error no retry can fix is logged and the event acknowledged (a poison message must not block).
   */
  private onEvent(deviceId: string, payload: Buffer): Promise<void> | undefined {
    const event = decodePayload(eventSchema, payload);
    this.checkDevice(deviceId, event.deviceId);
    if (!this.events) return undefined;
    const { registry } = this.deps;
    return this.events.run(async () => {
      // A status queued for the same device should land first (the rollout reads both); if that commit
      // fails, the writer retries it on its own and the event does not wait for it.
      await this.writer?.flush();
      const now = this.now();
      const lastSeen = this.seenAt(event.at);
      const applied = await registry.tx(function* (tx, t) {
        yield* q(tx.update(t.devices).set({ lastSeen }).where(eq(t.devices.id, deviceId)));
        // The one store of device events (issue 12), committed with the rollout's reaction to it.
        yield* deviceEventSteps(tx, t, [deviceEventInput(event)], now);
        return yield* applyDeviceEventSteps(tx, t, event, now);
      });
      this.count('events', 'accepted');
      this.log.info({ deviceId, type: event.type, release: event.release, reason: event.reason, rollout: applied?.rolloutId }, 'ingest/device-event');
      this.signal('event', { deviceId, event, applied });
    }).catch((err: unknown) => {
      this.count('events', 'failed');
      this.log.error({ err, deviceId, type: event.type }, 'ingest/device-event-failed: not retryable, acknowledged');
    });
  }

  private signal<K extends keyof FleetSignalMap>(name: K, ...args: FleetSignalMap[K]): void {
    try {
      (this.emit as (n: K, ...a: FleetSignalMap[K]) => boolean)(name, ...args);
    } catch (err) {
      this.log.error({ err, signal: name }, 'ingest/listener-failed');
    }
  }
}
