import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { publishRelease } from '../../../cloud/rounds/publish.js';
import { storeArtifact } from '../../../cloud/rounds/store.js';
import { denseModel } from '../../fixtures/onnx-models.js';
import { registryDialects } from '../../helpers/dialects.js';
import { FakePublisher, FakeRollouts, insertModel, tempDir } from '../../unit/rounds/helpers.js';

/**
 * Steps 8–9 of a release (an upload's, a round's) on a cluster follower (issue 15 item 4): its publishes
 * would be fenced, so it leaves the chunks to the leader and only stores the automatic rollout; the leader
 * publishes them.
 */
const dialects = registryDialects();

describe.each(dialects)('publishRelease as leader and as follower on $name', (d) => {
  let tmp: ReturnType<typeof tempDir>;
  let registry: StoreRegistry;
  beforeEach(async (ctx) => {
    tmp = tempDir();
    registry = await d.open(ctx);
    await insertModel(registry, { name: 'm', schedule: { autoRollout: true } });
    const m = denseModel({ sizes: [4, 2] });
    const stored = await storeArtifact(tmp.dir, m.bytes);
    await registry.q.insert(registry.t.releases).values({ model: 'm', seq: 1, sha256: stored.sha256, bytes: m.bytes.byteLength, quantization: 'fp32', metrics: {}, manifest: { artifact: { chunkSize: 2048 } }, signature: {}, artifactPath: stored.relPath });
  });
  afterEach(async () => {
    await d.close();
    tmp.cleanup();
  });

  const chunksPublished = async () => (await registry.q.select({ c: registry.t.releases.chunksPublished }).from(registry.t.releases).where(eq(registry.t.releases.seq, 1)))[0]!.c;

  it('a follower publishes no chunk and still starts the automatic rollout; the leader publishes them', async () => {
    const publish = new FakePublisher();
    const rollouts = new FakeRollouts();
    const follower = await publishRelease({ registry, dataDir: tmp.dir, publish, rollouts, leads: () => false }, 'upload', 1, () => {});
    expect(follower.problems).toEqual([]);
    expect(publish.calls).toEqual([]);
    expect(await chunksPublished()).toBe(false);
    expect(rollouts.calls).toHaveLength(1);
    expect(rollouts.calls[0]).toMatchObject({ model: 'm', releaseSeq: 1 });

    const leader = await publishRelease({ registry, dataDir: tmp.dir, publish, rollouts: new FakeRollouts(), leads: () => true }, 'upload', 1, () => {});
    expect(leader.problems).toEqual([]);
    expect(publish.calls).toEqual([{ sha256: leader.release.sha256, bytes: leader.release.bytes, chunkSize: 2048 }]);
    expect(await chunksPublished()).toBe(true);
  });

  it('a runner whose leader check fails (a stale leader) starts no automatic rollout, and says why', async () => {
    const rollouts = new FakeRollouts();
    const stale = async (action: string) => {
      throw new Error(`${action} refused: leader epoch 1 is stale (cluster_leader.epoch = 2)`);
    };
    const r = await publishRelease({ registry, dataDir: tmp.dir, publish: new FakePublisher(), rollouts, authorize: stale }, 'round-1', 1, () => {});
    expect(rollouts.calls).toEqual([]);
    expect(r.problems).toEqual(['rollout failed: round.rollout refused: leader epoch 1 is stale (cluster_leader.epoch = 2)']);
  });
});
