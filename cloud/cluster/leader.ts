import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { Counter, Gauge, type Registry as PromRegistry } from 'prom-client';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import { bumpEpoch, errorText, renewLeadership, tryAdvisoryLock, type ClusterDb } from './store.js';

/**
 * Leader election on PostgreSQL (issue 15, item 4).
 *
 * Each replica keeps one DEDICATED connection (never the registry pool) and, as a follower, tries
 * `pg_try_advisory_lock(lockKey)` on it every `pollMs`. A session advisory lock belongs to the session: it
 * is released the moment the server ends that session. The winner bumps `cluster_leader.epoch` in a
 * transaction and becomes leader with that epoch; every write and publish it makes is fenced on it
 * (fence.ts). As leader it renews every `renewMs` (an UPDATE of `renewed_at` that also proves the epoch is
 * still its own) under a client-side query timeout, and steps down at once (onFollower) when a renew fails
 * or times out, or when the connection reports `error` or `end`.
 *
 * How the lock is freed when the leader can no longer act:
 * - the process dies (kill -9) on a live host: the kernel closes the socket, the server ends the session
 *   at once, a follower wins at its next poll (≤ pollMs);
 * - the process is paused (SIGSTOP) or hangs: its session goes idle; the server ends it after
 *   `sessionIdleTimeoutMs` (`idle_session_timeout`, PostgreSQL ≥ 14; `idle_in_transaction_session_timeout`
 *   inside a transaction). A live leader is never idle that long since it renews every `renewMs`;
 * - the host or the network dies: server-side TCP keepalives (`tcp_keepalives_*`, set on the session)
 *   end the session after `serverKeepAlive.idleS + intervalS × count` seconds, and `idle_session_timeout`
 *   bounds it anyway. Client-side keepalives (`keepAlive`) plus the renew timeout make the leader's side
 *   notice.
 * So takeover ≤ max(sessionIdleTimeoutMs, keepalive bound) + pollMs + one query: with the defaults
 * 5 s + 1 s + ≤ 2 s = 8 s, under the 15 s.
 */
export interface LeaderTimings {
  /** Follower: how often to try the lock (and reconnect after losing the connection). */
  pollMs: number;
  /** Leader: how often to renew. Must stay well under sessionIdleTimeoutMs. */
  renewMs: number;
  /** Client-side timeout of every query on the dedicated connection; a timed-out renew steps down. */
  queryTimeoutMs: number;
  /** Server-side idle_session_timeout (and idle_in_transaction_session_timeout) of the dedicated session. */
  sessionIdleTimeoutMs: number;
  connectTimeoutMs: number;
  /** Client-side TCP keepalive initial delay on the dedicated socket. */
  keepAliveInitialDelayMs: number;
  /** Server-side TCP keepalives of the dedicated session (seconds, probes). */
  serverKeepAlive: { idleS: number; intervalS: number; count: number };
}

export const DEFAULT_LEADER_TIMINGS: LeaderTimings = {
  pollMs: 1000,
  renewMs: 1000,
  queryTimeoutMs: 2000,
  sessionIdleTimeoutMs: 5000,
  connectTimeoutMs: 3000,
  keepAliveInitialDelayMs: 1000,
  serverKeepAlive: { idleS: 2, intervalS: 1, count: 3 },
};

/** The default advisory lock key ('APPR'): one leader per database. */
export const DEFAULT_LEADER_LOCK_KEY = 0x41505052;

export type LeaderRole = 'follower' | 'leader' | 'stopped';

export interface LeaderElectorOptions {
  connectionString: string;
  /** This replica's name in cluster_leader.holder; default host:pid:random. */
  holder?: string;
  lockKey?: number;
  timings?: Partial<LeaderTimings>;
  log?: Logger;
  metrics?: PromRegistry;
  /** Became leader with this epoch: start the scheduler, the rollout engine, chunk publishing. */
  onLeader?: (epoch: number) => void | Promise<void>;
  /** Stopped being leader: stop them at once (their writes are fenced anyway). */
  onFollower?: (reason: string) => void | Promise<void>;
}

/** Checks that a live leader can never be ended by its own idle timeout. */
export function validateTimings(t: LeaderTimings): void {
  if (t.renewMs + t.queryTimeoutMs >= t.sessionIdleTimeoutMs) {
    throw new Error(`leader timings: renewMs + queryTimeoutMs (${t.renewMs + t.queryTimeoutMs}) must be below sessionIdleTimeoutMs (${t.sessionIdleTimeoutMs})`);
  }
  for (const [k, v] of Object.entries({ pollMs: t.pollMs, renewMs: t.renewMs, queryTimeoutMs: t.queryTimeoutMs, connectTimeoutMs: t.connectTimeoutMs })) {
    if (!(v > 0)) throw new Error(`leader timings: ${k} must be > 0, got ${v}`);
  }
}

export class LeaderElector {
  readonly holder: string;
  private readonly t: LeaderTimings;
  private readonly lockKey: number;
  private readonly log: Logger;
  private client: pg.Client | null = null;
  private db: ClusterDb | null = null;
  private state: LeaderRole = 'follower';
  private currentEpoch: number | null = null;
  private renewSentAt = -Infinity;
  private stopped = false;
  private wake: (() => void) | null = null;
  private loopDone: Promise<void> | null = null;
  private connectFailures = 0;
  private readonly gLeader: Gauge;
  private readonly gEpoch: Gauge;
  private readonly cElections: Counter;
  private readonly cStepDowns: Counter<'reason'>;

  constructor(private readonly opts: LeaderElectorOptions) {
    this.t = { ...DEFAULT_LEADER_TIMINGS, ...opts.timings };
    validateTimings(this.t);
    this.holder = opts.holder ?? `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
    this.lockKey = opts.lockKey ?? DEFAULT_LEADER_LOCK_KEY;
    this.log = (opts.log ?? silentLogger).child({ component: 'cluster-leader', holder: this.holder });
    const registers = opts.metrics ? [opts.metrics] : [];
    this.gLeader = new Gauge({ name: 'apprentice_cluster_leader', help: '1 while this replica is the cluster leader, else 0', registers });
    this.gEpoch = new Gauge({ name: 'apprentice_cluster_epoch', help: "This replica's leader epoch (0 while follower)", registers });
    this.cElections = new Counter({ name: 'apprentice_cluster_elections_won_total', help: 'Times this replica won the leader lock', registers });
    this.cStepDowns = new Counter({ name: 'apprentice_cluster_step_downs_total', help: 'Times this replica stopped being leader, by reason', labelNames: ['reason'] as const, registers });
  }

  role(): LeaderRole {
    return this.state;
  }

  /** The epoch this replica leads with, or null while it is not leader. */
  epoch(): number | null {
    return this.state === 'leader' ? this.currentEpoch : null;
  }

  /** True while leader and the last successful renew was sent less than `ms` ago (see Fence lease). */
  renewedWithin(ms: number): boolean {
    return this.state === 'leader' && performance.now() - this.renewSentAt < ms;
  }

  timings(): Readonly<LeaderTimings> {
    return this.t;
  }

  start(): void {
    if (this.loopDone) return;
    this.loopDone = this.loop();
  }

  /** Steps down (onFollower), ends the dedicated session (which frees the lock) and stops polling. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.wake?.();
    this.stepDown('stopped');
    this.state = 'stopped';
    await this.loopDone;
    await this.dropClient();
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      try {
        if (!this.client) await this.connect();
        if (this.stopped) break;
        if (this.state === 'leader') await this.renew();
        else await this.tryAcquire();
      } catch (err) {
        this.lose(errorText(err));
      }
      if (this.stopped) break;
      await this.sleep(this.state === 'leader' ? this.t.renewMs : this.t.pollMs);
    }
  }

  private async connect(): Promise<void> {
    const ka = this.t.serverKeepAlive;
    const client = new pg.Client({
      connectionString: this.opts.connectionString,
      application_name: 'apprentice-leader',
      keepAlive: true,
      keepAliveInitialDelayMillis: this.t.keepAliveInitialDelayMs,
      connectionTimeoutMillis: this.t.connectTimeoutMs,
      query_timeout: this.t.queryTimeoutMs,
      statement_timeout: this.t.queryTimeoutMs,
      idle_in_transaction_session_timeout: this.t.sessionIdleTimeoutMs,
      options: `-c idle_session_timeout=${this.t.sessionIdleTimeoutMs} -c tcp_keepalives_idle=${ka.idleS} -c tcp_keepalives_interval=${ka.intervalS} -c tcp_keepalives_count=${ka.count}`,
    });
    // Both fire when the server ends the session (idle timeout, terminate, restart) or the socket dies:
    // the lock is gone with the session, so a leader steps down right away, not at its next renew.
    client.on('error', (err) => {
      if (this.client === client) this.lose(`connection error: ${err.message}`);
    });
    client.on('end', () => {
      if (this.client === client && !this.stopped) this.lose('connection ended');
    });
    this.client = client;
    try {
      await client.connect();
    } catch (err) {
      this.client = null;
      void client.end().catch(() => undefined);
      this.connectFailures++;
      const msg = errorText(err);
      if (this.connectFailures === 1) this.log.warn({ err: msg }, 'leader election: cannot reach PostgreSQL, retrying');
      else this.log.debug({ err: msg, failures: this.connectFailures }, 'leader election: still cannot reach PostgreSQL');
      return;
    }
    if (this.connectFailures > 0) this.log.info({ failures: this.connectFailures }, 'leader election: connected to PostgreSQL');
    this.connectFailures = 0;
    this.db = drizzle(client);
  }

  private async tryAcquire(): Promise<void> {
    const db = this.db;
    if (!db) return;
    if (!(await tryAdvisoryLock(db, this.lockKey))) return;
    // The lock is ours until this session ends; open the new leadership with epoch + 1.
    const sent = performance.now();
    const epoch = await bumpEpoch(db, this.holder);
    if (this.stopped || this.db !== db) return;
    this.state = 'leader';
    this.currentEpoch = epoch;
    this.renewSentAt = sent;
    this.gLeader.set(1);
    this.gEpoch.set(epoch);
    this.cElections.inc();
    this.log.info({ epoch }, 'became cluster leader');
    this.fire(() => this.opts.onLeader?.(epoch), 'onLeader');
  }

  private async renew(): Promise<void> {
    const db = this.db;
    const epoch = this.currentEpoch;
    if (!db || epoch === null) return;
    const sent = performance.now();
    const ok = await renewLeadership(db, epoch, this.holder);
    if (this.db !== db || this.state !== 'leader') return;
    if (!ok) {
      // Cannot happen while our session holds the lock, unless someone edited the row: never act on it.
      this.lose('cluster_leader no longer carries our epoch');
      return;
    }
    this.renewSentAt = sent;
  }

  /** The dedicated session is unusable or our epoch is gone: step down now and reconnect later. */
  private lose(reason: string): void {
    this.stepDown(reason);
    void this.dropClient();
    this.wake?.();
  }

  private stepDown(reason: string): void {
    if (this.state !== 'leader') return;
    const epoch = this.currentEpoch;
    this.state = 'follower';
    this.currentEpoch = null;
    this.renewSentAt = -Infinity;
    this.gLeader.set(0);
    this.gEpoch.set(0);
    const label = reason === 'stopped' ? 'stopped' : reason.startsWith('cluster_leader') ? 'fenced' : 'connection';
    this.cStepDowns.inc({ reason: label });
    this.log.warn({ epoch, reason }, 'stepped down as cluster leader');
    this.fire(() => this.opts.onFollower?.(reason), 'onFollower');
  }

  private async dropClient(): Promise<void> {
    const client = this.client;
    this.client = null;
    this.db = null;
    if (!client) return;
    // end() sends Terminate (the server frees the lock at once); on a dead socket it may never resolve.
    await Promise.race([client.end().catch(() => undefined), new Promise((r) => setTimeout(r, this.t.queryTimeoutMs).unref())]);
  }

  private fire(fn: () => void | Promise<void> | undefined, name: string): void {
    Promise.resolve()
      .then(fn)
      .catch((err: unknown) => this.log.error({ err: err instanceof Error ? err.message : String(err) }, `${name} callback failed`));
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = () => {
        this.wake = null;
        done();
      };
    });
  }
}
