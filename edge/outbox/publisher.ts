import { randomUUID } from 'node:crypto';
import { PROTOCOL_VERSION, assertPublishable, decodePayload, encodePayload, examplesBatchSchema, receiptSchema, topics } from '../../shared/protocol/index.js';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import { createBackoff } from './backoff.js';
import type { OutboxPublisherOptions, PublishClient, PublisherStats } from './publisher-types.js';
import { DEFAULT_OUTBOX_CONFIG } from './config.js';
import { ReceiptTimeouts } from './receipt-timeout.js';
import type { Outbox, OutboxCounters } from './store.js';

export type { OutboxPublisherOptions, PublishClient, PublisherStats } from './publisher-types.js';

interface Batch {
  batchId: string;
  /** Rows still waiting (receipts remove them one by one). */
  ids: Set<string>;
  /** `receipt`: rows leave on the cloud's receipt; `puback`: on the broker's PUBACK (a cloud without receipts). */
  mode: 'receipt' | 'puback';
  timer: NodeJS.Timeout | undefined;
  sentAt: number;
  /** Send order (per publisher). */
  seq: number;
  /** Receipt wait multiplier, drawn at send. */
  jitter: number;
  /** When a receipt for a batch sent after this one arrived (so this one is no longer queued). */
  overtakenAt?: number;
}

/**
 * A batch still waiting this long after a later batch of the same device was receipted goes again: the
 * cloud consumes a device's messages in order, so its copy is not queued any more (its receipt, or the
 * message, was lost, e.g. a cloud stopped between the commit and the receipt).
 */
export const OVERTAKEN_GRACE_MS = 10_000;

/** Send times of batches released after a receipt timeout, kept this many, so a late receipt still measures latency. */
const RELEASED_KEPT = 256;

/** Room left in a batch payload for `{"v":1,"deviceId":…,"batchId":…,"examples":[]}`. */
const ENVELOPE_BYTES = 256;

/**
 * Drains the outbox to `topics.examples(deviceId)` as `examplesBatchSchema` payloads at QoS 1.
 *
 * Delivery contract (at least once; the cloud dedupes by example UUID):
 * - with receipts (issue 9): a row leaves the outbox only on the cloud's receipt for its example id:
 *   `stored` deletes it (published), `refused` deletes it (dropped + refused), `deferred` keeps it and
 *   holds it back for `retryAfterSeconds`. A PUBACK only says the broker has the batch. At most
 *   `maxInFlight` batches wait for receipts; one without a receipt in time is released and its rows go
 *   again in a new batch after an exponential backoff with jitter. "In time" adapts (ReceiptTimeouts):
 *   from `receiptTimeoutMs`, at least 3× the observed receipt latency, doubled per resend of the same
 *   rows, so a batch is not resent while its first copy is plausibly still queued behind a draining
 *   cloud; but OVERTAKEN_GRACE_MS after a later batch's receipt (that copy is gone). Receipts name
 *   example ids, so a late receipt for a released batch still settles its rows wherever they are now.
 * - without receipts (an older cloud): one batch in flight, rows deleted in the QoS 1 publish callback
 *   (MQTT.js calls it on PUBACK, `handlers/ack.ts`), resent after `ackTimeoutMs` while connected.
 * - we publish only while `client.connected`: MQTT.js would otherwise queue QoS 1 publishes in its
 *   in-memory outgoing store, which a crash loses. The SQLite row is the source of truth.
 * - a batch in flight when the connection drops stays in MQTT.js's outgoing store, which it resends on
 *   the next CONNACK ([MQTT-4.4.0-1]); offline time does not count against the PUBACK timeout.
 * - after each connect, sending starts after a jittered delay (`connectJitterMs`), so a fleet that
 *   lost its broker does not flush in the same second; the connect cancels a pending backoff.
 *
 * Note: a Mosquitto 3.1.1 broker that denies the publish by ACL still sends PUBACK (3.1.1 has no
 * negative ack); without receipts the rows are then deleted, so the ACL must allow `devices/{id}/examples`.
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
  private readonly receiptWait: ReceiptTimeouts;
  /** batchId → send time of batches released by a receipt timeout (their copies may still be queued). */
  private readonly released = new Map<string, { sentAt: number; seq: number }>();
  private sendSeq = 0;
  private receiptTimeoutCount = 0;
  private readonly maxInFlight: number;
  private readonly connectJitterMs: number;
  private readonly random: () => number;
  private readonly receipts: () => boolean;
  private readonly backoff: ReturnType<typeof createBackoff>;
  private readonly uuid: () => string;

  private running = false;
  private readonly inFlight = new Map<string, Batch>();
  private retryTimer: NodeJS.Timeout | undefined;
  /** Set from a connect until its jittered delay has passed. */
  private jitterTimer: NodeJS.Timeout | undefined;
  private deferTimer: NodeJS.Timeout | undefined;
  private pumpQueued = false;
  private unsubscribe: (() => void) | undefined;
  private batches = 0;
  private failures = 0;
  private badReceipts = 0;

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
    receipts = () => false,
    receiptTimeoutMs = DEFAULT_OUTBOX_CONFIG.receiptTimeoutMs,
    receiptTimeoutMaxMs = DEFAULT_OUTBOX_CONFIG.receiptTimeoutMaxMs,
    maxInFlight = 4,
    connectJitterMs = 0,
    random = Math.random,
  }: OutboxPublisherOptions) {
    this.outbox = outbox;
    this.client = client;
    this.deviceId = deviceId;
    this.topic = assertPublishable(topics.examples(deviceId));
    this.log = log;
    this.maxBatchExamples = maxBatchExamples;
    this.maxBatchBytes = maxBatchBytes;
    this.ackTimeoutMs = ackTimeoutMs;
    this.receiptWait = new ReceiptTimeouts({ baseMs: receiptTimeoutMs, maxMs: receiptTimeoutMaxMs, random });
    this.maxInFlight = maxInFlight;
    this.connectJitterMs = connectJitterMs;
    this.random = random;
    this.receipts = receipts;
    this.backoff = createBackoff({ random, ...backoff });
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
   * Stops sending. Batches in flight are not waited for: their rows stay on disk and go again after
   * the next start (a PUBACK or receipt arriving meanwhile still settles them).
   */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.client.removeListener('connect', this.onConnect);
    this.client.removeListener('close', this.onClose);
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    for (const t of [this.retryTimer, this.jitterTimer, this.deferTimer]) clearTimeout(t);
    this.retryTimer = this.jitterTimer = this.deferTimer = undefined;
    for (const b of this.inFlight.values()) clearTimeout(b.timer);
    this.inFlight.clear();
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
    let rows = 0;
    for (const b of this.inFlight.values()) rows += b.ids.size;
    return { ...this.outbox.stats(), inFlight: rows, batches: this.batches, failures: this.failures, badReceipts: this.badReceipts, receiptLatencyMs: Math.round(this.receiptWait.latencyMs), receiptTimeouts: this.receiptTimeoutCount };
  }

  /**
   * A message on `topics.receipts(deviceId)` (the daemon routes it here). Settles the rows it names;
   * never throws: an unreadable receipt is logged and counted, and its rows go again after the timeout.
   */
  handleReceipt(payload: Buffer): void {
    let r: ReturnType<typeof decodePayload<typeof receiptSchema>>;
    try {
      r = decodePayload(receiptSchema, payload);
      if (r.deviceId !== this.deviceId) throw new Error(`receipt for device "${r.deviceId}"`);
    } catch (err) {
      this.badReceipts++;
      this.log.warn({ err: (err as Error).message?.slice(0, 300) }, 'outbox/bad receipt');
      return;
    }
    if (this.outbox.closed) return;
    const sent = this.inFlight.get(r.batchId) ?? this.released.get(r.batchId);
    if (sent) {
      this.receiptWait.observe(Date.now() - sent.sentAt);
      this.overtake(sent.seq);
    }
    this.released.delete(r.batchId);
    try {
      let settled: string[];
      if (r.kind === 'batch') {
        const b = this.inFlight.get(r.batchId);
        settled = b ? [...b.ids] : [];
        this.outbox.refuse(settled);
        this.log.warn({ batchId: r.batchId, reason: r.refused.reason, detail: r.refused.detail, examples: settled.length }, 'outbox/batch refused by the cloud');
      } else {
        this.outbox.acknowledge(r.stored);
        if (r.refused.length) {
          this.outbox.refuse(r.refused.map((e) => e.id));
          this.log.warn({ batchId: r.batchId, refused: r.refused.slice(0, 10) }, 'outbox/examples refused by the cloud');
        }
        let wake = Infinity;
        for (const d of r.deferred) {
          this.outbox.defer([d.id], Date.now() + d.retryAfterSeconds * 1000);
          wake = Math.min(wake, d.retryAfterSeconds * 1000);
        }
        if (wake < Infinity) this.wakeAfter(wake);
        settled = [...r.stored, ...r.refused.map((e) => e.id), ...r.deferred.map((e) => e.id)];
      }
      this.settle(settled, r.kind === 'batch' ? r.batchId : undefined);
    } catch (err) {
      // A valid receipt the store could not apply (disk full, read-only): the rows stay and go again
      // after the receipt timeout; the cloud answers `stored` for duplicates, so nothing is lost.
      this.failures++;
      const e = err as NodeJS.ErrnoException;
      this.log.error({ err: e.message?.slice(0, 300), code: e.code, batchId: r.batchId }, 'outbox/receipt not applied: the outbox write failed; its rows go again after the timeout');
    }
  }

  private readonly onConnect = (): void => {
    // A fresh connection is the best moment to retry: drop any pending backoff, but start sending only
    // after a jittered delay (issue 9: 10,000 devices reconnecting must not flush in the same second).
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    clearTimeout(this.jitterTimer);
    this.jitterTimer = undefined;
    // MQTT.js is resending the unacknowledged batches from its outgoing store; give them a fresh window.
    for (const b of this.inFlight.values()) if (b.mode === 'puback') this.armTimer(b);
    const delay = Math.floor(this.random() * this.connectJitterMs);
    if (delay <= 0) return this.schedule();
    this.jitterTimer = setTimeout(() => {
      this.jitterTimer = undefined;
      this.schedule();
    }, delay);
  };

  private readonly onClose = (): void => {
    // Offline time must not count against the PUBACK timeout: MQTT.js resends on reconnect. A receipt
    // timeout keeps running: a receipt sent while we were away is lost (clean session) and must be asked again.
    for (const b of this.inFlight.values()) {
      if (b.mode !== 'puback') continue;
      clearTimeout(b.timer);
      b.timer = undefined;
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
    for (;;) {
      if (!this.running || this.retryTimer || this.jitterTimer || !this.client.connected || this.outbox.closed) return;
      const mode = this.receipts() ? 'receipt' : 'puback';
      if (this.inFlight.size >= (mode === 'receipt' ? this.maxInFlight : 1)) return;
      const exclude = new Set<string>();
      for (const b of this.inFlight.values()) for (const id of b.ids) exclude.add(id);
      const rows = this.outbox.peek({ limit: this.maxBatchExamples, maxBytes: this.maxBatchBytes - ENVELOPE_BYTES, exclude });
      if (rows.length === 0) return;
      const batch: Batch = { batchId: this.uuid(), ids: new Set(rows.map((r) => r.id)), mode, timer: undefined, sentAt: Date.now(), seq: this.sendSeq++, jitter: this.receiptWait.jitter() };
      const payload = encodePayload(examplesBatchSchema, { v: PROTOCOL_VERSION, deviceId: this.deviceId, batchId: batch.batchId, examples: rows.map((r) => r.example) });
      this.inFlight.set(batch.batchId, batch);
      this.armTimer(batch);
      this.log.debug({ batchId: batch.batchId, examples: rows.length, bytes: payload.byteLength, mode }, 'publishing examples batch');
      try {
        // For QoS 1, MQTT.js calls back on PUBACK (or with an error), not when the bytes are written.
        this.client.publish(this.topic, payload, { qos: 1 }, (err) => this.onAck(batch, err));
      } catch (err) {
        this.onAck(batch, err as Error);
      }
    }
  }

  private onAck(batch: Batch, err: Error | undefined): void {
    const current = this.inFlight.get(batch.batchId) === batch;
    if (!err) {
      if (batch.mode === 'receipt') return; // the broker has it; the receipt decides
      clearTimeout(batch.timer);
      if (current) this.inFlight.delete(batch.batchId);
      if (!this.outbox.closed) {
        try {
          this.outbox.acknowledge([...batch.ids]);
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
    clearTimeout(batch.timer);
    this.inFlight.delete(batch.batchId);
    this.failures++;
    this.log.warn({ err, batchId: batch.batchId, examples: batch.ids.size }, 'examples batch not acknowledged; will retry');
    this.retryLater();
  }

  /** Removes receipted ids from the batches in flight; a batch with none left is complete. */
  private settle(ids: readonly string[], batchId?: string): void {
    let completed = false;
    this.receiptWait.settled(ids);
    if (batchId) {
      const b = this.inFlight.get(batchId);
      if (b) b.ids.clear();
    }
    for (const b of [...this.inFlight.values()]) {
      for (const id of ids) b.ids.delete(id);
      if (b.ids.size > 0) continue;
      clearTimeout(b.timer);
      this.inFlight.delete(b.batchId);
      this.batches++;
      completed = true;
    }
    if (completed) this.backoff.reset();
    this.schedule();
  }

  private armTimer(batch: Batch): void {
    clearTimeout(batch.timer);
    if (batch.mode === 'puback') {
      batch.timer = setTimeout(() => this.expire(batch, this.ackTimeoutMs), this.ackTimeoutMs);
      return;
    }
    // The receipt wait is read again when the timer fires: receipts seen meanwhile may have stretched it.
    const due = (): number => Math.min(batch.sentAt + this.receiptWait.waitMs(batch.ids) * batch.jitter, (batch.overtakenAt ?? Infinity) + OVERTAKEN_GRACE_MS);
    const check = (): void => {
      const left = due() - Date.now();
      if (left > 0) {
        batch.timer = setTimeout(check, left);
        return;
      }
      this.expire(batch, Date.now() - batch.sentAt);
    };
    batch.timer = setTimeout(check, Math.max(0, due() - Date.now()));
  }

  private expire(batch: Batch, waitedMs: number): void {
    batch.timer = undefined;
    if (this.inFlight.get(batch.batchId) !== batch) return;
    this.inFlight.delete(batch.batchId);
    this.failures++;
    if (batch.mode === 'receipt') {
      this.receiptTimeoutCount++;
      this.receiptWait.timedOut(batch.ids);
      this.released.set(batch.batchId, { sentAt: batch.sentAt, seq: batch.seq });
      for (const id of this.released.keys()) {
        if (this.released.size <= RELEASED_KEPT) break;
        this.released.delete(id);
      }
    }
    this.log.warn(
      { batchId: batch.batchId, waitedMs, waiting: batch.ids.size, ...(batch.mode === 'receipt' ? { receiptLatencyMs: Math.round(this.receiptWait.latencyMs), nextWaitMs: Math.round(this.receiptWait.waitMs(batch.ids)) } : {}) },
      batch.mode === 'receipt' ? 'no receipt for examples batch; resending its rows' : 'no PUBACK for examples batch; resending its rows',
    );
    this.retryLater();
  }

  /** A batch sent as `seq` was receipted: the ones sent before it and still waiting are overtaken. */
  private overtake(seq: number): void {
    const now = Date.now();
    for (const b of this.inFlight.values()) {
      if (b.mode !== 'receipt' || b.seq >= seq || b.overtakenAt !== undefined) continue;
      b.overtakenAt = now;
      this.armTimer(b);
    }
  }

  /** Wakes the pump when deferred rows become due. */
  private wakeAfter(ms: number): void {
    if (this.deferTimer) return;
    this.deferTimer = setTimeout(() => {
      this.deferTimer = undefined;
      this.schedule();
    }, ms);
    this.deferTimer.unref?.();
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
