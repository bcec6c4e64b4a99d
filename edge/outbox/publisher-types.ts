import type { MqttClient } from 'mqtt';
import type { Logger } from '../../shared/log/index.js';
import type { BackoffOptions } from './backoff.js';
import type { Outbox, OutboxStats } from './store.js';

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
  /**
   * Whether the cloud sends receipts (its retained info says so). Then a row leaves only on its receipt
   * and up to `maxInFlight` batches wait for theirs; else (an older cloud) a PUBACK deletes the rows and
   * one batch is in flight. Asked per batch; default: no receipts.
   */
  receipts?: () => boolean;
  /**
   * The first wait for a receipt; without one, the batch's rows go again (after a backoff). The wait
   * adapts (ReceiptTimeouts): at least 3× the observed receipt latency, doubled per resend of the same
   * rows, with jitter. Default 60 s.
   */
  receiptTimeoutMs?: number;
  /** The adaptive receipt wait never exceeds this; default 30 min. */
  receiptTimeoutMaxMs?: number;
  /** Batches sent and not yet receipted, at most; default 4 (deploy/mosquitto sizes its queue on it). */
  maxInFlight?: number;
  /** After each connect, wait uniform [0, this) before sending, so a fleet does not flush in one second. Default 0. */
  connectJitterMs?: number;
  /** Uniform in [0, 1), for the connect jitter. */
  random?: () => number;
}

export interface PublisherStats extends OutboxStats {
  /** Rows in batches awaiting their PUBACK or receipt. */
  inFlight: number;
  /** Batches completed (PUBACK without receipts, or every row receipted) since start. */
  batches: number;
  /** Publish errors, ack and receipt timeouts since start. */
  failures: number;
  /** Receipts that could not be read or named another device (logged). */
  badReceipts: number;
  /** Observed send → receipt time (slow samples count at once, fast ones slowly); 0 before any receipt. */
  receiptLatencyMs: number;
  /** Batches whose receipt wait ran out (their rows were sent again). */
  receiptTimeouts: number;
}
