import { Counter, type Registry as PromRegistry } from 'prom-client';
import { silentLogger, type Logger } from '../../shared/log/index.js';

/**
 * The services only the leader runs (issue 15 item 4): the scheduler, the rollout engine, chunk publishing.
 *
 * A replica hands this its leader-only services; the elector's `onLeader(epoch)` calls `lead(epoch)`, which
 * starts them in order, and `onFollower` calls `follow(reason)`, which stops them in reverse order. Changes
 * are applied one at a time, in the order they came (a step-down that arrives while the services are still
 * starting waits for the start to finish, then stops them), so a service never runs twice or half-started
 * after a role change. A service that fails to start stops the ones started before it, is logged and counted
 * (`apprentice_cluster_leader_services_failures_total{service,step}`), and the replica stays without them
 * until the next election: its writes would be fenced anyway (fence.ts).
 *
 * Without a cluster (one process, SQLite) there is no elector: `single()` starts everything once, and the
 * role reads `single`.
 */
export interface LeaderService {
  readonly name: string;
  /** Start as leader with this epoch (every write and publish it makes is fenced on it). */
  start(epoch: number): Promise<void> | void;
  stop(): Promise<void> | void;
}

export type ReplicaRole = 'single' | 'leader' | 'follower' | 'stopped';

export interface RoleStatus {
  role: ReplicaRole;
  /** The epoch the services run under (null unless leader). */
  epoch: number | null;
  /** Names of the leader-only services running now. */
  running: string[];
}

export class LeaderServices {
  private readonly log: Logger;
  private readonly failures: Counter<'service' | 'step'>;
  private running: LeaderService[] = [];
  private role: ReplicaRole = 'follower';
  private epoch: number | null = null;
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly services: readonly LeaderService[],
    { log = silentLogger, metrics }: { log?: Logger; metrics?: PromRegistry } = {},
  ) {
    this.log = log.child({ component: 'cluster-leader-services' });
    this.failures = new Counter({
      name: 'apprentice_cluster_leader_services_failures_total',
      help: 'Leader-only services that failed to start or stop, by service and step',
      labelNames: ['service', 'step'] as const,
      registers: metrics ? [metrics] : [],
    });
  }

  status(): RoleStatus {
    return { role: this.role, epoch: this.epoch, running: this.running.map((s) => s.name) };
  }

  /** One process, no cluster: start every service now (epoch 0, nothing to fence against). */
  single(): Promise<void> {
    return this.enqueue(async () => {
      this.role = 'single';
      await this.startAll(0);
    });
  }

  /** Became leader with `epoch`: start the services (after any change still being applied). */
  lead(epoch: number): Promise<void> {
    return this.enqueue(async () => {
      await this.stopAll();
      this.role = 'leader';
      this.epoch = epoch;
      this.log.info({ epoch, services: this.services.map((s) => s.name) }, 'cluster/leader-services-starting');
      await this.startAll(epoch);
    });
  }

  /** Stopped being leader: stop the services. */
  follow(reason: string): Promise<void> {
    return this.enqueue(async () => {
      if (this.role === 'stopped') return;
      this.role = 'follower';
      this.epoch = null;
      if (this.running.length) this.log.warn({ reason, services: this.running.map((s) => s.name) }, 'cluster/leader-services-stopping');
      await this.stopAll();
    });
  }

  /** Stops everything for good (process shutdown). */
  stop(): Promise<void> {
    return this.enqueue(async () => {
      this.role = 'stopped';
      this.epoch = null;
      await this.stopAll();
    });
  }

  private enqueue(step: () => Promise<void>): Promise<void> {
    const next = this.queue.then(step);
    // The queue continues after a failed step; the caller still sees the failure.
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async startAll(epoch: number): Promise<void> {
    for (const s of this.services) {
      try {
        await s.start(epoch);
        this.running.push(s);
      } catch (err) {
        this.failures.inc({ service: s.name, step: 'start' });
        this.log.error({ err, service: s.name, epoch }, 'cluster/leader-service-start-failed: stopping the others until the next election');
        await this.stopAll();
        return;
      }
    }
  }

  private async stopAll(): Promise<void> {
    for (const s of this.running.splice(0).reverse()) {
      try {
        await s.stop();
      } catch (err) {
        this.failures.inc({ service: s.name, step: 'stop' });
        this.log.error({ err, service: s.name }, 'cluster/leader-service-stop-failed');
      }
    }
  }
}
