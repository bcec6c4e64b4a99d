/**
 * The cloud side of agent rollouts in process (issue 14), for tests over a real broker: tiny agent
 * releases pushed into a FleetFixture's registry (packed like `apprentice agent build`), and the
 * CloudMqtt client, Ingest, ReleasePublisher and RolloutEngine a cloud runs, wired the same way.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import type { Registry as PromRegistry } from 'prom-client';
import { releaseAgent, reissueAgent } from '../../cloud/agents/release.js';
import { deviceCompatOf } from '../../cloud/fleet/device-compat.js';
import { Ingest } from '../../cloud/fleet/ingest.js';
import { CloudMqtt } from '../../cloud/fleet/mqtt.js';
import { ReleasePublisher } from '../../cloud/fleet/publisher.js';
import type { StoreRegistry } from '../../cloud/registry/open.js';
import type { AgentReleaseRow } from '../../cloud/registry/schema.js';
import { RolloutEngine } from '../../cloud/rollouts/engine.js';
import { tinyBundle } from '../fixtures/agent-tar.js';
import type { FleetFixture } from '../unit/fleet/fixtures.js';

/**
 * Packs a tiny agent bundle of `version` in `work` and pushes it (cloud/agents/release.ts) into the fixture's
 * registry, or into `o.registry` with its tarball under `o.dataDir` (a PostgreSQL registry of a cluster test).
 */
export async function pushTinyAgent(fx: FleetFixture, work: string, o: { version: string; platform?: 'linux-x64' | 'linux-arm64'; upgradeFrom?: string[]; registry?: StoreRegistry; dataDir?: string }): Promise<AgentReleaseRow> {
  const platform = o.platform ?? 'linux-x64';
  const tar = join(work, `push-${o.version}-${platform}.tar.gz`);
  writeFileSync(tar, await tinyBundle(work, o.version, platform));
  return releaseAgent({ registry: o.registry ?? fx.registry, dataDir: o.dataDir ?? fx.dir, key: fx.key, tarPath: tar, now: new Date(), ...(o.upgradeFrom ? { upgradeFrom: o.upgradeFrom } : {}) });
}

export interface AgentCloud {
  engine: RolloutEngine;
  publisher: ReleasePublisher;
  /** Stops the engine, ingest and the MQTT client, in that order. */
  dispose(): Promise<void>;
}

/**
 * The cloud's MQTT side on `brokerUrl` for the fixture's registry, with a rollout engine ticking every
 * 100 ms. `reissueAgent`: agent rollbacks re-issue with the fixture's key; `cloudInfo`: the retained cloud
 * info (protocol revision) is published first, as the cloud server does.
 */
export async function startAgentCloud(fx: FleetFixture, brokerUrl: string, o: { sharedSubscriptions?: boolean; metrics?: PromRegistry; reissueAgent?: boolean; cloudInfo?: boolean } = {}): Promise<AgentCloud> {
  const cloud = await CloudMqtt.create({ url: brokerUrl, clientId: `cloud-${randomUUID().slice(0, 8)}`, sharedSubscriptions: o.sharedSubscriptions ?? false, reconnectPeriod: 100 });
  const ingest = await Ingest.create({ registry: fx.registry, mqtt: cloud });
  const publisher = new ReleasePublisher({ mqtt: cloud, dataDir: fx.dir, compatOf: (id) => deviceCompatOf(fx.registry, id) });
  if (o.cloudInfo) await publisher.publishCloudInfo();
  const engine = await RolloutEngine.create({
    registry: fx.registry,
    publisher,
    reissue: fx.reissue,
    ...(o.reissueAgent ? { reissueAgent: async (seq: number) => (await reissueAgent({ registry: fx.registry, key: fx.key, agentSeq: seq, now: new Date() })).agentSeq } : {}),
    signals: ingest,
    tickSeconds: 0.1,
    ...(o.metrics ? { metrics: o.metrics } : {}),
  });
  return {
    engine,
    publisher,
    dispose: async () => {
      await engine.dispose();
      await ingest.dispose();
      await cloud.dispose();
    },
  };
}
