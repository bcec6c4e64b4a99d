import { and, asc, eq, isNotNull, or } from 'drizzle-orm';
import { Counter, type Registry as PromRegistry } from 'prom-client';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import { StaleLeaderError } from '../cluster/fence.js';
import { leaderWriter, type LeaderWriter } from '../cluster/fenced-tx.js';
import type { StoreRegistry } from '../registry/open.js';
import { q } from '../registry/tx.js';
import type { ReleasePublisher } from './publisher.js';

/**
 * A revoked device's retained messages, cleared by the leader (issue 15 item 4: every replica serves the API).
 *
 * `DELETE /v1/devices/:id` on any replica sets `devices.revoked`; on a cluster it publishes nothing (a
 * follower's publishes are fenced). The row is the intent: a revoked device whose `desired_seq` or
 * `desired_agent_seq` is still set has its `desired` / `agent` release retained on the broker. The leader
 * sweeps such devices at election (what the old leader left), every `tickSeconds`, and at once when the
 * revoke came in on this replica (`kick`): it clears both retained topics (fenced publishes), then nulls the
 * two columns in a fenced transaction (cluster/fenced-tx.ts), then re-evaluates the rollouts (they stop
 * counting the device). Clearing twice is harmless (an empty retained publish), so a sweep that a takeover
 * cuts short is simply done again by the next leader. Counted in
 * `apprentice_cloud_revoked_retained_total{result="cleared"|"failed"}`.
 */
export interface RevokedRetainedDeps {
  registry: StoreRegistry;
  publisher: Pick<ReleasePublisher, 'clearDesired' | 'clearAgent'>;
  /** Re-evaluates every active rollout (RolloutEngine.evaluate). */
  rollouts: { evaluate(): Promise<void> };
  /** The leader's fenced writer for an epoch (Replica.writer); default unfenced. */
  writer?: (epoch: number) => LeaderWriter;
  log?: Logger;
  metrics?: PromRegistry;
  /** Default 10 s. */
  tickSeconds?: number;
  /** Devices cleared per sweep; the rest wait for the next one (default 500). */
  batch?: number;
}

export class RevokedRetained {
  private readonly log: Logger;
  private readonly counter: Counter<'result'>;
  private writer: LeaderWriter | undefined;
  private timer: NodeJS.Timeout | undefined;
  private tail: Promise<unknown> = Promise.resolve();

  constructor(private readonly deps: RevokedRetainedDeps) {
    this.log = (deps.log ?? silentLogger).child({ component: 'revoked-retained' });
    this.counter = new Counter({
      name: 'apprentice_cloud_revoked_retained_total',
      help: "Revoked devices whose retained desired / agent the leader cleared (cleared) or could not (failed: retried at the next sweep)",
      labelNames: ['result'] as const,
      registers: deps.metrics ? [deps.metrics] : [],
    });
  }

  /** As leader under `epoch`: sweeps now (what an old leader left), then every tick. */
  async start(epoch: number): Promise<void> {
    if (this.timer) return;
    this.writer = this.deps.writer?.(epoch) ?? leaderWriter(this.deps.registry, epoch);
    this.timer = setInterval(() => void this.sweep(), (this.deps.tickSeconds ?? 10) * 1000);
    this.timer.unref();
    await this.sweep();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    this.writer = undefined;
    await this.tail.catch(() => undefined);
  }

  /** A revoke came in on this replica: sweep now if it leads (a follower leaves it to the leader's next tick). */
  kick(): Promise<void> {
    if (this.timer) void this.sweep();
    return Promise.resolve();
  }

  /** One sweep (queued behind any running one); returns how many devices it cleared. Never throws. */
  sweep(): Promise<number> {
    const run = this.tail.then(() => this.sweepOnce());
    this.tail = run.catch(() => undefined);
    return run.catch((err: unknown) => {
      this.log.error({ err }, 'fleet/revoked-retained-sweep-failed: retried at the next tick');
      return 0;
    });
  }

  private async sweepOnce(): Promise<number> {
    const writer = this.writer;
    if (!writer) return 0;
    const { devices } = this.deps.registry.t;
    const batch = this.deps.batch ?? 500;
    const due = await this.deps.registry.q
      .select({ id: devices.id })
      .from(devices)
      .where(and(eq(devices.revoked, true), or(isNotNull(devices.desiredSeq), isNotNull(devices.desiredAgentSeq))))
      .orderBy(asc(devices.id))
      .limit(batch);
    if (due.length === batch) this.log.info({ batch }, 'fleet/revoked-retained: more revoked devices than one sweep takes; the rest at the next tick');
    let cleared = 0;
    for (const { id } of due) {
      try {
        await this.deps.publisher.clearDesired(id);
        await this.deps.publisher.clearAgent(id);
        await writer.tx('revoke.clear-retained', function* (tx, t) {
          yield* q(tx.update(t.devices).set({ desiredSeq: null, desiredAgentSeq: null }).where(and(eq(t.devices.id, id), eq(t.devices.revoked, true))));
        });
        cleared++;
        this.counter.inc({ result: 'cleared' });
        this.log.info({ device: id, epoch: writer.epoch }, 'fleet/revoked-retained-cleared');
      } catch (err) {
        this.counter.inc({ result: 'failed' });
        this.log.warn({ err, device: id }, 'fleet/revoked-retained-failed: retried at the next sweep');
        // No longer the leader: the next one sweeps.
        if (err instanceof StaleLeaderError) break;
      }
    }
    if (cleared) await this.deps.rollouts.evaluate();
    return cleared;
  }
}
