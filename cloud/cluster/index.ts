/** Cluster coordination on PostgreSQL (issue 15): leader election, epochs, fencing, one round per model. */
export { LeaderElector, DEFAULT_LEADER_LOCK_KEY, DEFAULT_LEADER_TIMINGS, validateTimings, type LeaderElectorOptions, type LeaderRole, type LeaderTimings } from './leader.js';
export { Fence, StaleLeaderError, openFence, type EpochSource, type FenceKind, type FenceOptions } from './fence.js';
export { claimRound, releaseRound, roundClaims, type RoundClaim } from './round-claims.js';
export { readLeader, errorText, type ClusterDb, type ClusterTx, type LeaderRow, type RoundClaimRow } from './store.js';
export { clusterLeader, clusterRoundClaims } from './schema-pg.js';
export { LeaderServices, type LeaderService, type ReplicaRole, type RoleStatus } from './leader-services.js';
export { leaderWriter, type LeaderWriter } from './fenced-tx.js';
