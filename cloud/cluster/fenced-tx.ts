import { eq, sql } from 'drizzle-orm';
import type { StoreRegistry } from '../registry/open.js';
import { q, type TxBody, type TxDb } from '../registry/tx.js';
import type { Fence } from './fence.js';
import { clusterLeader } from './schema-pg.js';
import type { ClusterTx } from './store.js';

/**
 * The leader's registry writes, fenced on its epoch (issue 15, item 4: "a leader epoch is checked before
 * every write the leader makes").
 *
 * A leader-only service gets a `LeaderWriter` for the epoch it was started under and writes through
 * `writer.tx(action, body)` instead of `reg.tx(body)`. On a cluster (PostgreSQL, `fence` given, epoch > 0)
 * the body runs after a first statement that reads `cluster_leader.epoch` FOR KEY SHARE in the same
 * transaction: a takeover's epoch bump (FOR UPDATE) waits for it, so the write either commits before the
 * new epoch exists or sees it and is refused with `StaleLeaderError` (logged and counted by the fence,
 * `apprentice_cluster_fence_refusals_total{kind="write"}`). Without a cluster (SQLite, or epoch 0 from
 * `LeaderServices.single()`) it is `reg.tx(body)`: one process has nobody to be fenced against.
 *
 * The body stays re-runnable (tx.ts rules): the epoch read is one more yielded statement.
 */
export interface LeaderWriter {
  /** The epoch this writer acts under (0 without a cluster). */
  readonly epoch: number;
  /** True when writes are checked against cluster_leader (a cluster leader on PostgreSQL). */
  readonly fenced: boolean;
  tx<R>(action: string, body: TxBody<R>): Promise<R>;
}

/** How long the epoch read waits behind a takeover in progress before the write fails (ms). */
const LOCK_TIMEOUT_MS = 5000;

export function leaderWriter(reg: StoreRegistry, epoch: number, fence?: Fence): LeaderWriter {
  if (!fence || reg.dialect !== 'postgres' || epoch <= 0) {
    return { epoch, fenced: false, tx: (_action, body) => reg.tx(body) };
  }
  return {
    epoch,
    fenced: true,
    tx: <R>(action: string, body: TxBody<R>) =>
      reg.tx(function* (tx, t) {
        const current = yield* lockEpoch(tx);
        fence.verify('write', action, epoch, current);
        return yield* body(tx, t);
      }),
  };
}

/** The registry transaction seen as the PostgreSQL transaction it is at runtime (tx.ts types every tx as SQLite's). */
function asPg(tx: TxDb): ClusterTx {
  return tx as unknown as ClusterTx;
}

function* lockEpoch(tx: TxDb): Generator<PromiseLike<unknown>, number | null, unknown> {
  const pgTx = asPg(tx);
  yield* q(pgTx.execute(sql.raw(`SET LOCAL lock_timeout = ${LOCK_TIMEOUT_MS}`)));
  const rows = yield* q(pgTx.select({ epoch: clusterLeader.epoch }).from(clusterLeader).where(eq(clusterLeader.id, 1)).for('key share'));
  return rows[0]?.epoch ?? null;
}

/**
 * The registry as a leader-only service writes it: `tx` goes through the writer (fenced on its epoch),
 * everything else (`t`, `q` for reads, `dialect`) is `reg`'s own. `writer` may be a function, read at each
 * transaction: a service that is started and stopped (the rollout engine) sets its writer on start and
 * clears it on stop; without one (`undefined`) the view's `tx` is `reg.tx`.
 *
 * Single statements on `q` are NOT fenced: a leader path writes through `tx` (a one-statement body is
 * fine). The view does not own the registry: `close()` does nothing.
 *
 * @example
 * const reg = fencedRegistry(registry, replica.writer(registry, epoch), 'retention');
 * await enforceRetention(reg, model, limits); // its deletes are refused once another replica took over
 */
export function fencedRegistry(reg: StoreRegistry, writer: LeaderWriter | (() => LeaderWriter | undefined), action: string): StoreRegistry {
  if (typeof writer !== 'function' && !writer.fenced) return reg;
  const current = typeof writer === 'function' ? writer : () => writer;
  // A prototype view: getters and methods of the registry run with `this` = the view and find its fields.
  const view = Object.create(reg) as StoreRegistry;
  Object.defineProperties(view, {
    tx: {
      value: <R>(body: TxBody<R>): Promise<R> => {
        const w = current();
        return w ? w.tx(action, body) : reg.tx(body);
      },
    },
    close: { value: async (): Promise<void> => undefined },
  });
  return view;
}

/** A fenced registry view for a leader service started and stopped from outside (`leaderSlot`). */
export interface LeaderSlot {
  /** Writes through the writer of the current `lead`; the plain registry before it and after `follow`. */
  readonly registry: StoreRegistry;
  /** The service was started as the leader under `writer`'s epoch. */
  lead(writer: LeaderWriter): void;
  /** The service stopped (a step-down): its writes are plain again, as on any follower. */
  follow(): void;
}

/**
 * `fencedRegistry` over a writer that a leader service's start sets and its stop clears, for a service
 * that does not take the writer itself (cloud/server.ts: the shadow service's re-issue at a switch).
 *
 * @example
 * const slot = leaderSlot(registry, 'shadow.reissue');
 * const shadow = new ShadowRollouts({ ..., reissue: (seq) => reissueRelease(slot.registry, signer, seq) });
 * leaderService('shadow', (epoch) => { slot.lead(replica.writer(registry, epoch)); shadow.start(); }, async () => { await shadow.stop(); slot.follow(); });
 */
export function leaderSlot(reg: StoreRegistry, action: string): LeaderSlot {
  let writer: LeaderWriter | undefined;
  return {
    registry: fencedRegistry(reg, () => writer, action),
    lead: (w) => void (writer = w),
    follow: () => void (writer = undefined),
  };
}
