import type { Registry as PromRegistry } from 'prom-client';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import type { MqttPublisher } from '../fleet/mqtt.js';
import { openFence, type Fence } from './fence.js';
import { leaderWriter, type LeaderWriter } from './fenced-tx.js';
import type { StoreRegistry } from '../registry/open.js';
import { LeaderElector, type LeaderTimings } from './leader.js';
import { LeaderServices, type LeaderService, type RoleStatus } from './leader-services.js';

/**
 * One cloud replica's place in the cluster (issue 15 item 4), for the composition root (cloud/server.ts).
 *
 * Every replica serves the API and the console and ingests through the shared subscription; the services
 * only the leader runs (the rollout engine's tick and publishes, the shadow tick, the round runner and
 * scheduler, retention, the republish on reconnect) are handed to `start(services)`:
 * - without a cluster: `LeaderServices.single()` runs them all at once, as one process always did;
 * - with `cluster.enabled`: a `LeaderElector` on `registry.url` drives them (lead on election, stop on
 *   step-down), and `fencedMqtt` makes every publish of the leader's publisher check the epoch first
 *   (fence.ts), so a stale leader's publish after a takeover is refused and counted
 *   (`apprentice_cluster_fence_refusals_total{kind="publish"}`).
 *
 * Open it before the publisher (it wraps its MQTT client), start it once the services exist.
 */
export interface ReplicaOptions {
  /** `registry.url` with `cluster.enabled`; absent: one process, no election. */
  clusterUrl?: string;
  /** This replica's name in cluster_leader.holder (cluster.replicaId). */
  holder?: string;
  timings?: Partial<LeaderTimings>;
  log?: Logger;
  metrics?: PromRegistry;
}

export class Replica {
  private services: LeaderServices | undefined;
  private readonly elector: LeaderElector | undefined;
  private readonly fence: { fence: Fence; close: () => Promise<void> } | undefined;
  private readonly log: Logger;

  constructor(private readonly opts: ReplicaOptions = {}) {
    this.log = opts.log ?? silentLogger;
    if (!opts.clusterUrl) return;
    this.fence = openFence(opts.clusterUrl, { log: this.log, ...(opts.metrics ? { metrics: opts.metrics } : {}) });
    this.elector = new LeaderElector({
      connectionString: opts.clusterUrl,
      ...(opts.holder ? { holder: opts.holder } : {}),
      ...(opts.timings ? { timings: opts.timings } : {}),
      log: this.log,
      ...(opts.metrics ? { metrics: opts.metrics } : {}),
      onLeader: (epoch) => this.services?.lead(epoch),
      onFollower: (reason) => this.services?.follow(reason),
    });
  }

  get clustered(): boolean {
    return this.elector !== undefined;
  }

  /** The fence (its own pool on `registry.url`) for services that fence acts outside the registry, e.g. round signing; undefined without a cluster. */
  get clusterFence(): Fence | undefined {
    return this.fence?.fence;
  }

  /**
   * `mqtt` with every publish fenced on this replica's epoch (a read of cluster_leader before each); without
   * a cluster, `mqtt` itself.
   */
  fencedMqtt(mqtt: MqttPublisher): MqttPublisher {
    if (!this.fence || !this.elector) return mqtt;
    const publish = this.fence.fence.guardPublish(this.elector, 'mqtt.publish', (topic: string, payload: Buffer | string, o: Parameters<MqttPublisher['publish']>[2]) => mqtt.publish(topic, payload, o));
    return { publish };
  }

  /**
   * The registry writes of a leader-only service started under `epoch` (fenced-tx.ts): fenced on a cluster,
   * `reg.tx` itself in one process.
   */
  writer(reg: StoreRegistry, epoch: number): LeaderWriter {
    return leaderWriter(reg, epoch, this.fence?.fence);
  }

  /** True while this replica runs the leader-only services (single, or the elected leader). */
  leads(): boolean {
    const role = this.status().role;
    return role === 'single' || role === 'leader';
  }

  /** role, epoch (null unless leader) and the services running, for /healthz. */
  status(): RoleStatus {
    return this.services?.status() ?? { role: this.elector ? 'follower' : 'single', epoch: null, running: [] };
  }

  /** Starts the leader-only services now (single) or when elected (cluster). Call once. */
  async start(services: readonly LeaderService[]): Promise<void> {
    if (this.services) throw new Error('Replica.start called twice');
    this.services = new LeaderServices(services, { log: this.log, ...(this.opts.metrics ? { metrics: this.opts.metrics } : {}) });
    if (!this.elector) {
      await this.services.single();
      // One process fails fast, as it did before the split (a replica waits for the next election instead).
      const missing = services.filter((s) => !this.services!.status().running.includes(s.name)).map((s) => s.name);
      if (missing.length) throw new Error(`cloud services failed to start: ${missing.join(', ')} (see the log)`);
      return;
    }
    this.log.info({ holder: this.elector.holder }, 'cluster/replica: electing');
    this.elector.start();
  }

  /** Stops the services, then the election (which frees the lock at once) and the fence's pool. */
  async stop(): Promise<void> {
    await this.services?.stop();
    await this.elector?.stop();
    await this.fence?.close();
  }
}

/** A leader-only service from start/stop functions (the epoch is for fenced writes; most ignore it). */
export function leaderService(name: string, start: (epoch: number) => Promise<void> | void, stop: () => Promise<void> | void): LeaderService {
  return { name, start, stop };
}
