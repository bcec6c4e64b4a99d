import type { Logger } from '../../shared/log/index.js';
import { Fence } from '../cluster/fence.js';
import { fencedRegistry, leaderWriter } from '../cluster/fenced-tx.js';
import type { StoreRegistry } from '../registry/open.js';
import { insertRelease, type NewRelease } from './releases.js';
import type { RoundJob } from './types.js';

/**
 * The worker's release insert (issue 15 item 4). With `job.epoch` (a cluster leader launched the round on
 * PostgreSQL) `insertRelease` runs through a fenced view of the worker's registry (fenced-tx.ts): its
 * transaction first reads cluster_leader.epoch FOR KEY SHARE, and after a takeover it is refused with
 * StaleLeaderError (logged, and counted in this process), so a worker orphaned by a dead or paused leader
 * never lands output. Without an epoch it is insertRelease on the plain registry, as before.
 */
export function releaseStore(job: RoundJob, registry: StoreRegistry, log?: Logger): (row: NewRelease) => Promise<void> {
  if (job.epoch === undefined || registry.dialect !== 'postgres') return (row) => insertRelease(registry, row);
  // The fence only counts and logs here (the epoch is read inside the insert's own transaction): the registry's pool serves it.
  const fence = new Fence({ db: registry.pg, ...(log ? { log } : {}) });
  const fenced = fencedRegistry(registry, leaderWriter(registry, job.epoch, fence), 'round.store');
  return (row) => insertRelease(fenced, row);
}
