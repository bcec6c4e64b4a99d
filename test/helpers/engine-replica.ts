/**
 * A cloud replica reduced to its leader-only rollout engine, wired as cloud/server.ts wires it (issue 15
 * item 4): `Replica` (election on the registry's PostgreSQL, fenced MQTT), its own CloudMqtt client, a
 * ReleasePublisher over the fenced client, and a RolloutEngine that acts only while this replica leads.
 * Used in-process (test/integration/cluster/replica-services.test.ts) and as a process
 * (engine-replica-process.ts, killed with SIGKILL in replica-kill.test.ts).
 */
import { Registry as PromRegistry } from 'prom-client';
import { leaderService, Replica } from '../../cloud/cluster/replica.js';
import type { LeaderService } from '../../cloud/cluster/leader-services.js';
import type { LeaderTimings } from '../../cloud/cluster/leader.js';
import { CloudMqtt } from '../../cloud/fleet/mqtt.js';
import { ReleasePublisher, type ReleasePublisherDeps } from '../../cloud/fleet/publisher.js';
import type { StoreRegistry } from '../../cloud/registry/open.js';
import { RolloutEngine } from '../../cloud/rollouts/engine.js';
import { silentLogger, type Logger } from '../../shared/log/index.js';

export interface EngineReplica {
  name: string;
  replica: Replica;
  engine: RolloutEngine;
  publisher: ReleasePublisher;
  metrics: PromRegistry;
  stop(): Promise<void>;
}

export interface EngineReplicaOptions {
  name: string;
  registry: StoreRegistry;
  /** The registry's PostgreSQL URL (the election and the fence use it). */
  url: string;
  brokerUrl: string;
  /** Where releases.artifact_path resolves. */
  dataDir: string;
  tickSeconds: number;
  timings?: Partial<LeaderTimings>;
  log?: Logger;
  /** What the publisher learns about a device (default: nothing, a protocol-1 daemon). */
  compatOf?: ReleasePublisherDeps['compatOf'];
  /** More leader-only services, started after the engine (as cloud/server.ts orders them), built on this replica's parts. */
  services?: (parts: { replica: Replica; publisher: ReleasePublisher; engine: RolloutEngine; metrics: PromRegistry }) => LeaderService[];
}

export async function startEngineReplica(o: EngineReplicaOptions): Promise<EngineReplica> {
  const metrics = new PromRegistry();
  const log = o.log ?? silentLogger;
  const replica = new Replica({ clusterUrl: o.url, holder: o.name, ...(o.timings ? { timings: o.timings } : {}), log, metrics });
  const mqtt = new CloudMqtt({ url: o.brokerUrl, clientId: `apprentice-cloud-${o.name}`, sharedSubscriptions: false, log });
  await mqtt.start();
  const publisher = new ReleasePublisher({ mqtt: replica.fencedMqtt(mqtt), dataDir: o.dataDir, log, ...(o.compatOf ? { compatOf: o.compatOf } : {}) });
  const engine = new RolloutEngine({
    registry: o.registry,
    publisher,
    log,
    tickSeconds: o.tickSeconds,
    requireTelemetry: false,
    reissue: () => Promise.reject(new Error('no re-issue in this test')),
    leads: () => replica.leads(),
  });
  // As cloud/server.ts: the engine's registry writes are fenced on the epoch it was started under.
  await replica.start([
    leaderService('rollouts', (epoch) => engine.start(replica.writer(o.registry, epoch)), () => engine.stop()),
    ...(o.services?.({ replica, publisher, engine, metrics }) ?? []),
  ]);
  let stopped = false;
  return {
    name: o.name,
    replica,
    engine,
    publisher,
    metrics,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await replica.stop();
      await mqtt.dispose();
    },
  };
}
