import type { Logger } from '../../shared/log/index.js';
import { openFence } from '../cluster/fence.js';
import { leaderWriter } from '../cluster/fenced-tx.js';
import type { StoreRegistry } from '../registry/open.js';
import { q } from '../registry/tx.js';
import { insertRelease, type NewRelease } from './releases.js';
import type { RoundJob } from './types.js';

/** How a round worker inserts its release rows, and what to close when it is done. */
export interface ReleaseStore {
  store(row: NewRelease): Promise<void>;
  close(): Promise<void>;
}

/**
 * The worker's release insert (issue 15 item 4). With `job.epoch` (a cluster leader launched the round on
 * PostgreSQL) the insert runs in a transaction that first reads cluster_leader.epoch FOR KEY SHARE
 * (fenced-tx.ts, on a fence of its own small pool): after a takeover it is refused with StaleLeaderError
 * (logged, and counted in this process), so a worker orphaned by a dead or paused leader never lands output.
 * Without an epoch it is insertRelease, as before.
 */
export function openReleaseStore(job: RoundJob, registry: StoreRegistry, log?: Logger): ReleaseStore {
  if (job.epoch === undefined || !('url' in job.registry) || registry.dialect !== 'postgres') {
    return { store: (row) => insertRelease(registry, row), close: async () => {} };
  }
  const { fence, close } = openFence(job.registry.url, log ? { log } : {});
  const writer = leaderWriter(registry, job.epoch, fence);
  return {
    store: (row) =>
      writer.tx('round.store', function* (tx, t) {
        yield* q(tx.insert(t.releases).values(row));
      }),
    close,
  };
}
