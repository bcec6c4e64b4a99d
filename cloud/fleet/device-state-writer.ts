import { eq } from 'drizzle-orm';
import type { Counter } from 'prom-client';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import type { Status, Telemetry } from '../../shared/protocol/index.js';
import type { StoreRegistry } from '../registry/open.js';
import { q, type Statement, type Tables, type TxDb } from '../registry/tx.js';

/** A write the writer applies, in arrival order, inside one transaction. */
export type DeviceStateOp =
  | { kind: 'status'; deviceId: string; status: Status; retain: boolean; lastSeen: string }
  | { kind: 'telemetry'; deviceId: string; telemetry: Telemetry; lastSeen: string };

/** What a committed status op reports to listeners. */
export interface CommittedStatus {
  deviceId: string;
  status: Status;
  retain: boolean;
  wentOnline: boolean;
}

/**
 * Steps of the writer's transaction body (cloud/registry/tx.ts) for every batch (the console's telemetry
 * history is one): yield its statements with `yield* q(tx...)`. `previous[i]` is, for a telemetry op
 * `ops[i]`, the device's telemetry stored before it (null: none yet), read in the same transaction, so
 * every replica and a restarted cloud see the same predecessor.
 */
export type DeviceStateSink = (tx: TxDb, t: Tables, ops: readonly DeviceStateOp[], previous: readonly (Telemetry | null | undefined)[]) => Generator<Statement, void, unknown>;

export interface DeviceStateWriterDeps {
  registry: StoreRegistry;
  log?: Logger;
  /** Ops arriving within this window share one transaction; default 250 ms. */
  flushMs?: number;
  /** Flush at once at this many queued ops; also the bound while commits fail. Default 5,000. */
  maxQueued?: number;
  /** Per-result counter (`committed`, `dropped_status`, `dropped_telemetry`, `commit_failed`). */
  counter?: Counter<'result'>;
  /** Called after each commit, in arrival order (the rollout engine's signals). */
  onCommitted?: (ops: readonly { op: DeviceStateOp; status?: CommittedStatus }[]) => void;
}

/**
 * Batches device status and telemetry writes: one transaction per `flushMs` instead of one per message
 * (issue 9: 10,000 devices at 30 s telemetry is ~333 writes/s, each an fsync under synchronous=FULL).
 *
 * Why these writes may be acknowledged before they commit: a status is retained on the broker and comes
 * back on every (re)subscribe, and telemetry is a QoS 0 heartbeat superseded by the next one. Nothing
 * is lost for good by a crash inside the window. A failed commit keeps its ops and retries at the next
 * tick; past `maxQueued` the oldest ops are dropped, logged and counted.
 *
 * @example
 * const writer = new DeviceStateWriter({ registry, onCommitted: (ops) => ... });
 * writer.addSink(new TelemetryHistory().sink);
 * writer.push({ kind: 'telemetry', deviceId, telemetry, lastSeen });
 */
export class DeviceStateWriter {
  private ops: DeviceStateOp[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly sinks: DeviceStateSink[] = [];
  private readonly log: Logger;
  private readonly flushMs: number;
  private readonly maxQueued: number;
  private stopped = false;
  /** A commit failed and its retry is scheduled: pushes only queue (a locked database blocks each attempt). */
  private failing = false;
  /** The commit in flight: one at a time, so ops commit in arrival order. */
  private committing: Promise<boolean> | undefined;

  constructor(private readonly deps: DeviceStateWriterDeps) {
    this.log = deps.log ?? silentLogger;
    this.flushMs = deps.flushMs ?? 250;
    this.maxQueued = deps.maxQueued ?? 5_000;
  }

  /** Adds a sink that runs in the same transaction as each batch. Returns a remover. */
  addSink(sink: DeviceStateSink): () => void {
    this.sinks.push(sink);
    return () => void this.sinks.splice(this.sinks.indexOf(sink), 1);
  }

  queued(): number {
    return this.ops.length;
  }

  push(op: DeviceStateOp): void {
    this.ops.push(op);
    if (this.ops.length > this.maxQueued) this.shed();
    if (this.ops.length >= this.maxQueued && !this.failing && !this.committing) {
      void this.flush();
      return;
    }
    if (!this.timer && !this.stopped) this.timer = setTimeout(() => void this.flush(), this.flushMs);
  }

  /**
   * Commits the queued ops in one transaction; resolves false when the commit failed (ops kept, retried
   * later). On SQLite the transaction is done before this returns.
   */
  flush(): Promise<boolean> {
    clearTimeout(this.timer);
    this.timer = undefined;
    // One commit at a time: ops pushed meanwhile go in the next one.
    if (this.committing) return this.committing.then((ok) => (ok ? this.flush() : false));
    if (this.ops.length === 0) return Promise.resolve(true);
    this.committing = this.commit().finally(() => (this.committing = undefined));
    return this.committing;
  }

  private async commit(): Promise<boolean> {
    const ops = this.ops;
    this.ops = [];
    const sinks = [...this.sinks];
    let committed: { op: DeviceStateOp; status?: CommittedStatus }[];
    try {
      committed = await this.deps.registry.tx((tx, t) => stateSteps(tx, t, ops, sinks));
    } catch (err) {
      // Back in front of those pushed meanwhile (the bound applies again at the next push).
      this.ops = ops.concat(this.ops);
      this.deps.counter?.inc({ result: 'commit_failed' });
      this.log.error({ err, ops: ops.length }, 'ingest/device-state-commit-failed');
      this.failing = true;
      if (!this.stopped) this.timer = setTimeout(() => void this.flush(), Math.max(this.flushMs, 1000));
      return false;
    }
    this.failing = false;
    this.deps.counter?.inc({ result: 'committed' }, ops.length);
    try {
      this.deps.onCommitted?.(committed);
    } catch (err) {
      this.log.error({ err }, 'ingest/device-state-listener-failed');
    }
    return true;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.flush();
    clearTimeout(this.timer);
    this.timer = undefined;
  }
  /** Past the bound (only while commits fail): drop the oldest ops, telemetry first. */
  private shed(): void {
    const over = this.ops.length - this.maxQueued;
    let dropTelemetry = 0;
    const keep: DeviceStateOp[] = [];
    for (const op of this.ops) {
      if (op.kind === 'telemetry' && dropTelemetry < over) dropTelemetry++;
      else keep.push(op);
    }
    const dropStatus = Math.max(0, keep.length - this.maxQueued);
    this.ops = keep.slice(dropStatus);
    if (dropTelemetry) this.deps.counter?.inc({ result: 'dropped_telemetry' }, dropTelemetry);
    if (dropStatus) this.deps.counter?.inc({ result: 'dropped_status' }, dropStatus);
    this.log.warn({ dropTelemetry, dropStatus, maxQueued: this.maxQueued }, 'ingest/device-state-queue-full (statuses come back from the broker on resubscribe)');
  }
}

/** One batch as a transaction body (cloud/registry/tx.ts): the device rows in arrival order, then the sinks. */
function* stateSteps(tx: TxDb, t: Tables, ops: readonly DeviceStateOp[], sinks: readonly DeviceStateSink[]) {
  const { devices } = t;
  const out: { op: DeviceStateOp; status?: CommittedStatus }[] = [];
  const previous: (Telemetry | null | undefined)[] = [];
  for (const op of ops) {
    if (op.kind === 'telemetry') {
      // The stored telemetry is only read when a sink wants it: one indexed read per telemetry op.
      if (sinks.length > 0) {
        const [row] = yield* q(tx.select({ t: devices.lastTelemetry }).from(devices).where(eq(devices.id, op.deviceId)));
        previous[out.length] = (row?.t as Telemetry | null | undefined) ?? null;
      }
      yield* q(tx.update(devices).set({ lastTelemetry: op.telemetry, lastSeen: op.lastSeen }).where(eq(devices.id, op.deviceId)));
      out.push({ op });
      continue;
    }
    const [before] = yield* q(tx.select({ online: devices.online }).from(devices).where(eq(devices.id, op.deviceId)));
    const online = op.status.state === 'online';
    yield* q(
      tx
        .update(devices)
        .set({
          online,
          lastSeen: op.lastSeen,
          // The offline status is the last will, composed when the device connected: its running
          // release may be stale, so only an online status says what runs. Protocol fields too: a
          // daemon downgraded to protocol 1 sends none and must get today's fields again.
          ...(online
            ? {
                runningSeq: op.status.release,
                runningSha256: op.status.sha256,
                protocolVersion: op.status.protocolVersion ?? null,
                capabilities: op.status.capabilities ?? null,
                trust: op.status.trust ?? null,
                degraded: op.status.degraded ?? null,
                agent: op.status.agent ?? null,
                platform: op.status.platform ?? null,
              }
            : {}),
        })
        .where(eq(devices.id, op.deviceId)),
    );
    out.push({ op, status: { deviceId: op.deviceId, status: op.status, retain: op.retain, wentOnline: online && !before?.online } });
  }
  for (const sink of sinks) yield* sink(tx, t, ops, previous);
  return out;
}
