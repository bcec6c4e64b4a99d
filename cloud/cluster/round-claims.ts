import type { Fence } from './fence.js';
import { deleteRoundClaim, listRoundClaims, lockRoundClaim, upsertRoundClaim, type ClusterDb, type RoundClaimRow } from './store.js';

/**
 * At most one round per model across the cluster (issue 15, item 4). Only the leader starts rounds, and
 * it claims the model first, in a fenced transaction:
 * - no claim: the model is ours for this round;
 * - a claim of an OLDER epoch: its leader died or was fenced, so the round it ran is orphaned. The claim
 *   moves to us and `orphaned` names that round, for the caller to mark it failed and retry it;
 * - a claim of OUR epoch for another round: a round of this model is already running; no second one
 *   (for the same round: still ours, the claim is refreshed).
 * `release` ends the claim when the round finishes (fenced too: a stale leader cannot free a new claim).
 */
export type RoundClaim =
  | { claimed: true; orphaned: { roundId: string; epoch: number; holder: string } | null }
  | { claimed: false; running: { roundId: string; epoch: number; holder: string } };

export async function claimRound(fence: Fence, epoch: number | null, holder: string, modelId: string, roundId: string): Promise<RoundClaim> {
  return fence.write(epoch, 'round.claim', async (tx) => {
    const prior = await lockRoundClaim(tx, modelId);
    // Our own claim for this very round (a launch retried after its first attempt failed) is still ours.
    if (prior && prior.epoch === epoch && prior.roundId !== roundId) {
      return { claimed: false, running: { roundId: prior.roundId, epoch: prior.epoch, holder: prior.holder } };
    }
    await upsertRoundClaim(tx, { modelId, roundId, epoch: epoch as number, holder });
    return { claimed: true, orphaned: prior && prior.epoch !== epoch ? { roundId: prior.roundId, epoch: prior.epoch, holder: prior.holder } : null };
  });
}

/** Frees the model's claim if `roundId` still holds it; false when it did not. */
export async function releaseRound(fence: Fence, epoch: number | null, modelId: string, roundId: string): Promise<boolean> {
  return fence.write(epoch, 'round.release', (tx) => deleteRoundClaim(tx, modelId, roundId));
}

/** Every model's claim (for a new leader resuming, and for the console). */
export async function roundClaims(db: ClusterDb): Promise<RoundClaimRow[]> {
  return listRoundClaims(db);
}

/** Every model's claim, read in a transaction fenced on `epoch` (a stale leader cannot even recover). */
export async function roundClaimsFenced(fence: Fence, epoch: number | null): Promise<RoundClaimRow[]> {
  return fence.write(epoch, 'round.claims', (tx) => listRoundClaims(tx));
}
