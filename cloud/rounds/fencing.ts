import { eq } from 'drizzle-orm';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import type { Fence } from '../cluster/fence.js';
import { leaderWriter, type LeaderWriter } from '../cluster/fenced-tx.js';
import { claimRound, releaseRound, roundClaimsFenced, type RoundClaim } from '../cluster/round-claims.js';
import type { RoundClaimRow } from '../cluster/store.js';
import type { StoreRegistry } from '../registry/open.js';
import type { RoundRow } from '../registry/schema.js';
import { allocateReleaseSeqIn } from './releases.js';
import { q } from '../registry/tx.js';

/** A cluster replica's fence and name, for its round runner (cloud/server.ts passes Replica's). */
export interface RoundsCluster {
  fence: Fence;
  /** cluster.replicaId: the holder named in cluster_round_claims. */
  holder: string;
}

/**
 * What a round runner does as leader under one epoch (issue 15 item 4), fenced on a cluster:
 * - every round-row write goes through a `LeaderWriter` (fenced-tx.ts): refused after a takeover;
 * - a launch claims the model first (cluster_round_claims, round-claims.ts), the round's end frees it;
 * - a release sequence is allocated in a fenced transaction, and the signature is preceded by
 *   `Fence.check(epoch, 'round.sign')`, so a paused stale leader that resumes never signs;
 * - the worker gets `epoch` in its job and stores its release fenced (fenced-store.ts).
 * Without a cluster (SQLite, one process, epoch 0) each is what it was: plain registry transactions, no claims.
 * Refusals throw StaleLeaderError, logged and counted by the fence (apprentice_cluster_fence_refusals_total).
 */
export class RoundFencing {
  readonly writer: LeaderWriter;
  private readonly log: Logger;

  constructor(
    private readonly reg: StoreRegistry,
    readonly epoch: number,
    private readonly cluster?: RoundsCluster,
    log?: Logger,
  ) {
    this.writer = leaderWriter(reg, epoch, cluster?.fence);
    this.log = (log ?? silentLogger).child({ component: 'rounds-fencing', epoch });
  }

  /** True on a cluster leader (PostgreSQL, epoch > 0): writes fenced, models claimed. */
  get fenced(): boolean {
    return this.writer.fenced && this.cluster !== undefined;
  }

  /** The epoch the worker stores its release under, when fenced. */
  get jobEpoch(): number | undefined {
    return this.fenced ? this.epoch : undefined;
  }

  update(id: string, set: Partial<RoundRow>): Promise<void> {
    return this.writer.tx('round.update', function* (tx, t) {
      yield* q(tx.update(t.rounds).set(set).where(eq(t.rounds.id, id)));
    });
  }

  /** The next release sequence, allocated only while this epoch is the cluster's. */
  allocateSeq(): Promise<number> {
    return this.writer.tx('round.sequence', allocateReleaseSeqIn);
  }

  /** Refuses (StaleLeaderError) unless this epoch is still the cluster's; nothing to check without a cluster. */
  async authorize(action: string): Promise<void> {
    if (this.fenced) await this.cluster!.fence.check(this.epoch, action);
  }

  /** Claims `model` for round `roundId`; undefined without a cluster (one process has nobody to race). */
  async claim(model: string, roundId: string): Promise<RoundClaim | undefined> {
    if (!this.fenced) return undefined;
    const c = await claimRound(this.cluster!.fence, this.epoch, this.cluster!.holder, model, roundId);
    if (c.claimed && c.orphaned && c.orphaned.roundId !== roundId) {
      this.log.info({ model, round: roundId, orphan: c.orphaned }, 'rounds: took over the model claim of an older epoch');
    }
    return c;
  }

  /** Frees `model`'s claim if `roundId` holds it (no-op without a cluster; failures logged, not thrown). */
  async release(model: string, roundId: string): Promise<void> {
    if (!this.fenced) return;
    await releaseRound(this.cluster!.fence, this.epoch, model, roundId).catch((err: unknown) => this.log.warn({ err, model, round: roundId }, 'rounds: claim not released'));
  }

  /** Claims of OLDER epochs (dead or fenced leaders), by round id. Empty without a cluster. */
  async orphanClaims(): Promise<Map<string, RoundClaimRow>> {
    if (!this.fenced) return new Map();
    const rows = await roundClaimsFenced(this.cluster!.fence, this.epoch);
    return new Map(rows.filter((c) => c.epoch < this.epoch).map((c) => [c.roundId, c]));
  }

  /** Why a round left `running` by an earlier process is failed now. */
  interruption(orphan: RoundClaimRow | undefined): string {
    if (!this.fenced) return 'cloud restarted during round';
    return orphan ? `leader changed (epoch ${orphan.epoch}→${this.epoch}) during round` : `leader changed (now epoch ${this.epoch}) during round`;
  }
}
