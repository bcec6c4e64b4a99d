import { randomUUID } from 'node:crypto';
import type { MqttClient } from 'mqtt';
import { PROTOCOL_VERSION, assertPublishable, encodePayload, examplesBatchSchema, topics } from '../../shared/protocol/index.js';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import { createBackoff, type BackoffOptions } from './backoff.js';
import { DEFAULT_OUTBOX_CONFIG } from './config.js';
import type { Outbox, OutboxCounters, OutboxStats } from './store.js';

/** The part of an MQTT.js client the publisher uses (a real `MqttClient` satisfies it). */
export interface PublishClient {
  readonly connected: boolean;
  publish(topic: string, message: Buffer, opts: { qos: 1 }, callback: (error?: Error) => void): unknown;
  on(event: 'connect' | 'close', listener: () => void): unknown;
  removeListener(event: 'connect' | 'close', listener: () => void): unknown;
}
// Compile-time proof that the real client fits the interface above.
const _mqttClientFits: MqttClient extends PublishClient ? true : never = true;
void _mqttClientFits;

export interface OutboxPublisherOptions {
  outbox: Outbox;
  client: PublishClient;
  deviceId: string;
  log?: Logger;
  /** Examples per batch (≤ MAX_EXAMPLES_PER_BATCH); default 64. */
  maxBatchExamples?: number;
  /** Payload bytes per batch, envelope included; default 128 KiB. One larger example is sent alone. */
  maxBatchBytes?: number;
  /** How long to wait, while connected, for a PUBACK before resending the rows; default 30 s. */
  ackTimeoutMs?: number;
  backoff?: BackoffOptions;
  /** Batch id source; defaults to `crypto.randomUUID`. */
  uuid?: () => string;
}

export interface PublisherStats extends OutboxStats {
  /** Rows in the batch awaiting PUBACK (0 or up to maxBatchExamples). */
  inFlight: number;
  /** Batches acknowledged since start. */
  batches: number;
  /** Publish errors and ack timeouts since start. */
  failures: number;
}

interface Batch {
  batchId: string;
  ids: string[];
  timer: NodeJS.Timeout | undefined;
}

/** Room left in a batch payload for `{"v":1,"deviceId":…,"batchId":…,"examples":[]}`. */
const ENVELOPE_BYTES = 256;

/**
 * Drains the outbox to `topics.examples(deviceId)` as `examplesBatchSchema` payloads at QoS 1.
 *
 * Delivery contract (at least once; the cloud dedupes by example UUID):
 * - rows are deleted only in the publish callback without error, which MQTT.js calls for QoS 1 on
 *   PUBACK (`handlers/ack.ts`), never on write;
 * - one batch in flight at a time, and it is not re-sent by us while it is in flight;
 * - we publish only while `client.connected`: MQTT.js would otherwise queue QoS 1 publishes in its
 *   in-memory outgoing store, which a crash loses. The SQLite row is the source of truth.
 * - a batch in flight when the connection drops stays in MQTT.js's outgoing store, which it resends on
 *   the next CONNACK ([MQTT-4.4.0-1]) keeping our callback; so on `close` we only pause its ack timer;
 * - on a publish error, or no PUBACK within `ackTimeoutMs` while connected, the batch is abandoned and
 *   its rows (still on disk) go again in a new batch after an exponential backoff with jitter. A late
 *   PUBACK for an abandoned batch still deletes its rows: the broker has them.
 * - `connect` cancels a pending backoff and resumes at once; after a restart the rows are still on disk.
 *
 * Note: a Mosquitto 3.1.1 broker that denies the publish by ACL still sends PUBACK (3.1.1 has no
 * negative ack), so rows are deleted; the ACL must allow `devices/{id}/examples`.
 */
export class OutboxPublisher {
  private readonly outbox: Outbox;
  private readonly client: PublishClient;
  private readonly deviceId: string;
  private readonly topic: string;
  private readonly log: Logger;
  private readonly maxBatchExamples: number;
  private readonly maxBatchBytes: number;
  private readonly ackTimeoutMs: number;
  private readonly backoff: ReturnType<typeof createBackoff>;
  private readonly uuid: () => string;

  private running = false;
  private inFlight: Batch | null = null;
  private retryTimer: NodeJS.Timeout | undefined;
  private pumpQueued = false;
  private unsubscribe: (() => void) | undefined;
  private batches = 0;
  private failures = 0;

  constructor({
    outbox,
    client,
    deviceId,
    log = silentLogger,
    maxBatchExamples = DEFAULT_OUTBOX_CONFIG.batch.maxExamples,
    maxBatchBytes = DEFAULT_OUTBOX_CONFIG.batch.maxBytes,
    ackTimeoutMs = DEFAULT_OUTBOX_CONFIG.ackTimeoutMs,
    backoff = DEFAULT_OUTBOX_CONFIG.backoff,
    uuid = randomUUID,
  }: OutboxPublisherOptions) {
    this.outbox = outbox;
    this.client = client;
    this.deviceId = deviceId;
    this.topic = assertPublishable(topics.examples(deviceId));
    this.log = log;
    this.maxBatchExamples = maxBatchExamples;
    this.maxBatchBytes = maxBatchBytes;
    this.ackTimeoutMs = ackTimeoutMs;
    this.backoff = createBackoff(backoff);
    this.uuid = uuid;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.client.on('connect', this.onConnect);
    this.client.on('close', this.onClose);
    this.unsubscribe = this.outbox.onAdded(() => this.schedule());
    this.schedule();
  }

  /**
   * Stops sending. A batch still in flight is not waited for: its rows stay on disk and go again
   * after the next start (a PUBACK arriving meanwhile still deletes them).
   */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.client.removeListener('connect', this.onConnect);
    this.client.removeListener('close', this.onClose);
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    if (this.inFlight) clearTimeout(this.inFlight.timer);
    this.inFlight = null;
  }

  depth(): number {
    return this.outbox.depth();
  }

  bytes(): number {
    return this.outbox.bytes();
  }

  counters(): OutboxCounters {
    return this.outbox.counters();
  }

  stats(): PublisherStats {
    return { ...this.outbox.stats(), inFlight: this.inFlight?.ids.length ?? 0, batches: this.batches, failures: this.failures };
  }

  private readonly onConnect = (): void => {
    // A fresh connection is the best moment to retry: drop any pending backoff.
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    // MQTT.js is resending the in-flight batch from its outgoing store; give it a fresh ack window.
    if (this.inFlight) this.armAckTimer(this.inFlight);
    this.schedule();
  };

  private readonly onClose = (): void => {
    // Offline time must not count against the ack timeout: MQTT.js resends on reconnect.
    if (this.inFlight) {
      clearTimeout(this.inFlight.timer);
      this.inFlight.timer = undefined;
    }
  };

  /** Coalesces wake-ups (many adds, connect, acks) into one pump on the next turn. */
  private schedule(): void {
    if (this.pumpQueued || !this.running) return;
    this.pumpQueued = true;
    setImmediate(() => {
      this.pumpQueued = false;
      try {
        this.pump();
      } catch (err) {
        this.log.error({ err }, 'outbox/pump failed');
        this.retryLater();
      }
    });
  }

  private pump(): void {
    if (!this.running || this.inFlight || this.retryTimer || !this.client.connected || this.outbox.closed) return;
    const rows = this.outbox.peek({ limit: this.maxBatchExamples, maxBytes: this.maxBatchBytes - ENVELOPE_BYTES });
    if (rows.length === 0) return;
    const batch: Batch = { batchId: this.uuid(), ids: rows.map((r) => r.id), timer: undefined };
    const payload = encodePayload(examplesBatchSchema, {
      v: PROTOCOL_VERSION,
      deviceId: this.deviceId,
      batchId: batch.batchId,
      examples: rows.map((r) => r.example),
    });
    this.inFlight = batch;
    this.armAckTimer(batch);
    this.log.debug({ batchId: batch.batchId, examples: rows.length, bytes: payload.byteLength }, 'publishing examples batch');
    try {
      // For QoS 1, MQTT.js calls back on PUBACK (or with an error), not when the bytes are written.
      this.client.publish(this.topic, payload, { qos: 1 }, (err) => this.onAck(batch, err));
    } catch (err) {
      this.onAck(batch, err as Error);
    }
  }

  private onAck(batch: Batch, err: Error | undefined): void {
    clearTimeout(batch.timer);
    batch.timer = undefined;
    const current = this.inFlight === batch;
    if (current) this.inFlight = null;
    if (!err) {
      if (!this.outbox.closed) {
        try {
          this.outbox.acknowledge(batch.ids);
        } catch (e) {
          // The rows stay and are sent again; the cloud ignores the repeated UUIDs.
          this.log.error({ err: e, batchId: batch.batchId }, 'outbox/acknowledge failed');
        }
      }
      this.batches++;
      if (current) {
        this.backoff.reset();
        this.schedule();
      }
      return;
    }
    if (!current) return; // an abandoned batch failing changes nothing: its rows were already released
    this.failures++;
    this.log.warn({ err, batchId: batch.batchId, examples: batch.ids.length }, 'examples batch not acknowledged; will retry');
    this.retryLater();
  }

  private armAckTimer(batch: Batch): void {
    clearTimeout(batch.timer);
    batch.timer = setTimeout(() => {
      batch.timer = undefined;
      if (this.inFlight !== batch) return;
      this.inFlight = null;
      this.failures++;
      this.log.warn({ batchId: batch.batchId, timeoutMs: this.ackTimeoutMs }, 'no PUBACK for examples batch; resending its rows');
      this.retryLater();
    }, this.ackTimeoutMs);
  }

  private retryLater(): void {
    if (!this.running || this.retryTimer) return;
    const delay = this.backoff.next();
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.schedule();
    }, delay);
  }
}
