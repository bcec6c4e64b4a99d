import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { Counter, type Registry as PromRegistry } from 'prom-client';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import { lockEpochForShare, readLeader, setLocalTimeouts, type ClusterDb, type ClusterTx } from './store.js';

/**
 * Fencing (issue 15, item 4): a leader acts only while `cluster_leader.epoch` is still its own.
 *
 * - `write(epoch, action, fn)`: runs `fn` in a transaction that first reads the epoch row `FOR KEY SHARE`.
 *   A takeover's epoch bump (which locks that row FOR UPDATE) waits for the transaction, so either the write commits
 *   before the new epoch exists, or it sees the new epoch and is refused. Nothing a stale leader writes
 *   can land after a takeover.
 * - `check(epoch, action)`: a fresh read, for acts outside the database: signing a round's output (the
 *   round worker gets the epoch in its job) or handing a message to MQTT.
 * - `guardPublish(source, publish)`: wraps a publish function with `check`, or with a lease (the
 *   elector renewed within `leaseMs`) when the caller accepts that window.
 *
 * Every refusal throws `StaleLeaderError`, is logged and counted in
 * `apprentice_cluster_fence_refusals_total{kind}`.
 */
export class StaleLeaderError extends Error {
  override readonly name = 'StaleLeaderError';
  constructor(
    /** What was refused, e.g. `rollout.step`, `chunk.publish`, `round.sign`. */
    readonly action: string,
    /** The epoch the caller acts under; null when it is not leader at all. */
    readonly myEpoch: number | null,
    /** The epoch in cluster_leader at the check; null when no replica was ever elected. */
    readonly currentEpoch: number | null,
  ) {
    super(
      myEpoch === null
        ? `${action} refused: this replica is not the cluster leader`
        : `${action} refused: leader epoch ${myEpoch} is stale (cluster_leader.epoch = ${currentEpoch ?? 'none'})`,
    );
  }
}

export type FenceKind = 'write' | 'check' | 'publish';

/** Where a publisher learns its epoch: the LeaderElector satisfies it. */
export interface EpochSource {
  epoch(): number | null;
  renewedWithin?(ms: number): boolean;
}

export interface FenceOptions {
  db: ClusterDb;
  log?: Logger;
  metrics?: PromRegistry;
  /** A fenced transaction idle longer than this between statements is ended by the server (default 5 s). */
  idleInTransactionMs?: number;
  /** How long the epoch read waits for the row lock (a takeover in progress) before failing (default 5 s). */
  lockTimeoutMs?: number;
}

export class Fence {
  private readonly db: ClusterDb;
  private readonly log: Logger;
  private readonly refusals: Counter<'kind'>;
  private readonly idleInTransactionMs: number;
  private readonly lockTimeoutMs: number;

  constructor(opts: FenceOptions) {
    this.db = opts.db;
    this.log = (opts.log ?? silentLogger).child({ component: 'cluster-fence' });
    this.idleInTransactionMs = opts.idleInTransactionMs ?? 5000;
    this.lockTimeoutMs = opts.lockTimeoutMs ?? 5000;
    this.refusals = new Counter({
      name: 'apprentice_cluster_fence_refusals_total',
      help: 'Writes, checks and publishes refused because the leader epoch they carried was stale (or absent)',
      labelNames: ['kind'] as const,
      registers: opts.metrics ? [opts.metrics] : [],
    });
  }

  /** Runs `fn` in a transaction that commits only if `epoch` is still the cluster's epoch. */
  async write<T>(epoch: number | null, action: string, fn: (tx: ClusterTx) => Promise<T>): Promise<T> {
    if (epoch === null) throw this.refuse('write', action, null, null);
    return this.db.transaction(async (tx) => {
      await setLocalTimeouts(tx, this.idleInTransactionMs, this.lockTimeoutMs);
      const current = await lockEpochForShare(tx);
      if (current !== epoch) throw this.refuse('write', action, epoch, current);
      return fn(tx);
    });
  }

  /**
   * Throws (logged, counted) unless `current`, an epoch the caller read itself (inside its own transaction,
   * fenced-tx.ts), is `epoch`.
   */
  verify(kind: FenceKind, action: string, epoch: number | null, current: number | null): void {
    if (epoch === null || current !== epoch) throw this.refuse(kind, action, epoch, current);
  }

  /** Refuses unless `epoch` is the cluster's epoch right now (one read, no transaction). */
  async check(epoch: number | null, action: string, kind: FenceKind = 'check'): Promise<void> {
    if (epoch === null) throw this.refuse(kind, action, null, null);
    const current = (await readLeader(this.db))?.epoch ?? null;
    if (current !== epoch) throw this.refuse(kind, action, epoch, current);
  }

  /**
   * Wraps `publish` so it runs only for the current leader. `leaseMs` = 0 (default) reads the epoch before
   * every publish. With `leaseMs` > 0 a publish within `leaseMs` of the elector's last successful renew
   * skips the read. The session can end right after a renew and a follower win at once, so a publish may
   * then follow a takeover by up to `leaseMs`: use a lease only where a message that late is harmless.
   */
  guardPublish<A extends unknown[], R>(
    source: EpochSource,
    action: string,
    publish: (...args: A) => Promise<R>,
    leaseMs = 0,
  ): (...args: A) => Promise<R> {
    return async (...args: A) => {
      const epoch = source.epoch();
      if (epoch === null) throw this.refuse('publish', action, null, null);
      if (!(leaseMs > 0 && source.renewedWithin?.(leaseMs))) await this.check(epoch, action, 'publish');
      return publish(...args);
    };
  }

  private refuse(kind: FenceKind, action: string, mine: number | null, current: number | null): StaleLeaderError {
    const err = new StaleLeaderError(action, mine, current);
    this.refusals.inc({ kind });
    this.log.warn({ kind, action, epoch: mine, currentEpoch: current }, err.message);
    return err;
  }
}

/**
 * A fence on its own small pool, for a process without the registry pool: the forked round worker,
 * which gets `{ registryUrl, epoch }` in its job and must pass `check(epoch, 'round.sign')` before it
 * signs and `write(epoch, 'round.store', …)` to store its output.
 */
export function openFence(connectionString: string, opts: Omit<FenceOptions, 'db'> = {}): { fence: Fence; close: () => Promise<void> } {
  const pool = new pg.Pool({ connectionString, max: 2, application_name: 'apprentice-fence', connectionTimeoutMillis: 5000 });
  const log = opts.log ?? silentLogger;
  pool.on('error', (err) => log.warn({ err: err.message }, 'fence pool: idle connection error'));
  // pg emits 'error' on a CHECKED-OUT client too (pg-pool only listens while it is idle), e.g. when the
  // server ends a fenced transaction paused past idle_in_transaction_session_timeout: without this
  // listener the process would crash instead of the transaction failing.
  pool.on('connect', (client) => client.on('error', (err) => log.warn({ err: err.message }, 'fence pool: connection error')));
  const fence = new Fence({ ...opts, db: drizzle(pool) });
  return { fence, close: () => pool.end() };
}
