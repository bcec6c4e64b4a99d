import { describe, expect, it } from 'vitest';
import { topics } from '../../../shared/protocol/index.js';
import { MODEL, eventPayload } from '../fleet/fixtures.js';
import { RolloutHarness, ids, onFakeTime } from './harness.js';

/**
 * A rollout never completes past failures it has not judged: failures that arrive while the engine
 * awaits a publish (here: the quarantine of the first failed device) are counted against the threshold
 * in the next evaluation, not left `failed` in a completed rollout. Seen with agent rollouts over a real
 * broker (test/integration/fleet/agent-rollout.test.ts, "a device that rolls back is a failure"); made
 * deterministic here by delivering the other devices' failures from inside that publish.
 */
describe('completion after failures', () => {
  let h: RolloutHarness;
  onFakeTime(
    (x) => (h = x),
    (x) => ids(3).forEach((id) => x.fx.addDevice(id, { runningSeq: 1, desiredSeq: 1 })),
  );

  it('failures that land during the quarantine publish roll the rollout back instead of completing it', async () => {
    await h.boot();
    const r = await h.engine.create({ model: MODEL, releaseSeq: 2, waves: [1], soakSeconds: 0, minFailures: 2, failureThreshold: 0.5 });
    let delivered = false;
    h.fake.fail = (topic) => {
      // d01's quarantine release: the other two devices' rollbacks arrive while it is being published.
      if (topic === topics.desired('d01') && !delivered) {
        delivered = true;
        for (const id of ['d02', 'd03']) h.feed('events', id, eventPayload(id, 'rolled_back', 2, 'nan_output'));
      }
      return false;
    };
    await h.event('d01', 'rolled_back', 2, 'nan_output');
    await h.engine.evaluate();
    expect(delivered).toBe(true);
    const v = await h.view(r.id);
    // 3 bad of 3 settled ≥ max(2, 0.5 × 3): rolled back, every device on the re-issue of release 1.
    expect(v.rollout.state).toBe('rolled_back');
    expect(v.counts.failed + v.counts.quarantined).toBe(3);
    for (const id of ids(3)) expect(h.fake.desiredRelease(id)).toBe(v.rollout.rollbackSeq);
  });
});
