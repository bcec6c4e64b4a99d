/**
 * A simulated device with a daemon's outbox in miniature, on the real protocol (shared/protocol): a batch of
 * fresh example ids on `devices/{id}/examples` (QoS 1); a row is deleted only on the cloud's `stored`
 * receipt on `devices/{id}/receipts` (sent after the commit); rows without a receipt are re-sent under a new
 * batch id after a receipt timeout. Used by the 3-replica kill e2e test (test/e2e/cluster-ingest-kill) and the
 * replicas bench (test/bench/replicas.bench.ts), which also reads the send → receipt latency of each batch.
 * The device's registry row must declare the `receipts` capability, or the cloud sends none.
 */
import { randomUUID } from 'node:crypto';
import mqttLib, { type MqttClient } from 'mqtt';
import { topics, type Example } from '../../shared/protocol/index.js';

export interface OutboxDeviceOptions {
  /** Examples per batch. */
  batch: number;
  /** A batch every this many ms after start(). */
  sendEveryMs: number;
  /** Rows without a receipt this long are re-sent by resendOverdue(). */
  receiptTimeoutMs: number;
  /** The example with id `id` (the k-th of its batch); default: 4 float32 inputs, 2 outputs, reason audit. */
  example?: (id: string, k: number) => Example;
  /** Called with the ms from a batch's publish to its receipt (first receipt of that batch id only). */
  onReceipt?: (latencyMs: number, sentAtMs: number) => void;
}

const smallExample = (id: string, k: number): Example => ({
  id,
  input: Buffer.from(new Float32Array([k, 1, 2, 3]).buffer).toString('base64'),
  output: [0.6, 0.4],
  model: null,
  release: null,
  at: new Date().toISOString(),
  reason: 'audit',
});

export class OutboxDevice {
  /** Every example id this device selected. */
  readonly selected = new Set<string>();
  /** id → when it was last sent (deleted on `stored`). */
  readonly outbox = new Map<string, number>();
  /** Example ids sent more than once (no receipt within the timeout). */
  readonly resent = new Set<string>();
  resends = 0;
  /** Receipts naming refused or deferred examples, or of another kind (kept as text; none expected). */
  readonly unexpected: string[] = [];
  /** batch id → when it was published, until its receipt. */
  private readonly pending = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private constructor(
    readonly id: string,
    private readonly client: MqttClient,
    private readonly o: OutboxDeviceOptions,
  ) {}

  static async connect(url: string, id: string, o: OutboxDeviceOptions): Promise<OutboxDevice> {
    const client = await mqttLib.connectAsync(url, { clientId: `dev-${id}`, clean: true, reconnectPeriod: 200 });
    const d = new OutboxDevice(id, client, o);
    client.on('message', (_topic, payload) => d.receipt(payload));
    await client.subscribeAsync(topics.receipts(id), { qos: 1 });
    return d;
  }

  private receipt(payload: Buffer): void {
    const r = JSON.parse(payload.toString()) as { kind: string; batchId?: string; stored?: string[]; refused?: unknown[]; deferred?: unknown[] };
    if (r.kind !== 'examples' || r.refused?.length || r.deferred?.length) this.unexpected.push(payload.toString().slice(0, 500));
    for (const x of r.stored ?? []) this.outbox.delete(x);
    const sentAt = r.batchId === undefined ? undefined : this.pending.get(r.batchId);
    if (sentAt !== undefined) {
      this.pending.delete(r.batchId!);
      this.o.onReceipt?.(performance.now() - sentAt, sentAt);
    }
  }

  private publish(ids: string[]): void {
    const make = this.o.example ?? smallExample;
    const examples = ids.map((id, k) => make(id, k));
    const batchId = randomUUID();
    const now = Date.now();
    for (const x of ids) this.outbox.set(x, now);
    this.pending.set(batchId, performance.now());
    void this.client.publishAsync(topics.examples(this.id), JSON.stringify({ v: 1, deviceId: this.id, batchId, examples }), { qos: 1 }).catch(() => undefined);
  }

  /** Selects a batch of fresh examples and sends it. */
  send(): void {
    const ids = Array.from({ length: this.o.batch }, () => randomUUID());
    for (const x of ids) this.selected.add(x);
    this.publish(ids);
  }

  /** Re-sends (new batch id, same example ids) the rows whose receipt is overdue. */
  resendOverdue(): void {
    const now = Date.now();
    const due = [...this.outbox].filter(([, t]) => now - t > this.o.receiptTimeoutMs).map(([x]) => x);
    for (let i = 0; i < due.length; i += this.o.batch) {
      const chunk = due.slice(i, i + this.o.batch);
      for (const x of chunk) this.resent.add(x);
      this.resends += chunk.length;
      this.publish(chunk);
    }
  }

  start(): void {
    this.timer = setInterval(() => this.send(), this.o.sendEveryMs);
  }
  stop(): void {
    clearInterval(this.timer);
  }
  async end(): Promise<void> {
    this.stop();
    await this.client.endAsync(true);
  }
}

/** Rows waiting for a receipt across devices. */
export const outboxDepth = (devices: readonly OutboxDevice[]): number => devices.reduce((n, d) => n + d.outbox.size, 0);
