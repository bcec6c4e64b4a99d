import { and, desc, eq } from 'drizzle-orm';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import { StaleLeaderError } from '../cluster/fence.js';
import { fencedRegistry, type LeaderWriter } from '../cluster/fenced-tx.js';
import type { StoreRegistry } from '../registry/open.js';
import type { RolloutRow } from '../registry/schema.js';
import type { FleetSignalMap } from '../fleet/ingest.js';
import type { ReleasePublisher } from '../fleet/publisher.js';
import { RolloutError, rolloutRequestSchema, type RolloutRequest, type RolloutState } from './policy.js';
import { RolloutSteps } from './steps.js';
import { AgentConverger, agentConvergeCandidates } from './agent-converge.js';
import { EngineCpuMeter } from './meter.js';
import { activeMemberships, activeRollouts, convergeCandidates, patchMember, rolloutsVersionNow, setRollout } from './store.js';
import { rolloutView, type RolloutView } from './view.js';
import type { RolloutEngineDeps, Timers } from './engine-deps.js';

export type { RolloutView } from './view.js';
export type { RolloutEngineDeps, Timers };

/** The engine's cached view of rollouts (see `RolloutEngine.cache`). */
interface Snapshot {
  active: RolloutRow[];
  candidates: RolloutRow[];
  agentCandidates: RolloutRow[];
}

const ABORTABLE: readonly string[] = ['pending', 'canary', 'fleet', 'rolling_back'] satisfies RolloutState[];
const PAUSABLE: readonly string[] = ['pending', 'canary', 'fleet'] satisfies RolloutState[];
const ROLLBACKABLE: readonly string[] = ['canary', 'fleet', 'completed', 'aborted', 'rolling_back', 'superseded'] satisfies RolloutState[];

/**
 * Rolls releases out in waves, quarantines failed devices and rolls back past the threshold (DESIGN.md
 * "Cloud rules", issue 8); the transitions are in `RolloutSteps` and `WaveChecks`. All state is in the DB (rollouts, rollout_devices, devices.desired_seq), so
 * `start()` in a fresh process resumes where the last one stopped. Every step runs through one
 * queue, so ticks, device signals and API calls never interleave half-way.
 *
 * @example
 * const engine = await RolloutEngine.create({ registry, publisher, reissue, signals: ingest });
 * const r = await engine.create({ model: 'mnist', releaseSeq: 7, target: { kind: 'all' }, waves: [0.01, 0.1, 0.5, 1], soakSeconds: 600 });
 */
export class RolloutEngine {
  private readonly log: Logger;
  private readonly now: () => Date;
  private readonly timers: Timers;
  private readonly steps: RolloutSteps;
  private tail: Promise<unknown> = Promise.resolve();
  private evalQueued = false;
  private interval: unknown;
  private offs: (() => void)[] = [];
  private readonly meter: EngineCpuMeter;
  /** deps.publisher, metered (the engine's CPU meter stops while a publish is awaited). */
  private readonly publisher: ReleasePublisher;
  /**
   * Active rollouts and converge candidates, valid while `rolloutsVersionNow()` is `version` (every
   * write to `rollouts` in this process bumps it; the tick drops it too, for writes by another process).
   * A device signal with no active rollout then costs no query at all.
   */
  private cache: { version: number; snap: Promise<Snapshot> } | undefined;
  /** Device signal handlers still reading the registry (`idle` waits for them: they may queue work). */
  private readonly handling = new Set<Promise<void>>();
  /** Late joiners of fleet-stage and finished agent rollouts (issue 14). */
  private readonly agents: AgentConverger;
  /** The writer of the epoch this engine was started under (`start`), until `stop`. */
  private writer: LeaderWriter | undefined;
  /**
   * The registry the leader's work writes (ticks, steps, late devices, republish): its transactions go
   * through `writer`, so on a cluster they are refused once another replica took over (issue 15 item 4).
   * The API's own writes (create, pause, abort, …) use `deps.registry`: any replica makes them.
   */
  private readonly leaderReg: StoreRegistry;

  constructor(private readonly deps: RolloutEngineDeps) {
    this.log = deps.log ?? silentLogger;
    this.now = deps.now ?? (() => new Date());
    // Resolved at call time, so fake timers installed after construction still apply.
    this.timers = deps.timers ?? { setInterval: (fn, ms) => setInterval(fn, ms), clearInterval: (h) => clearInterval(h as NodeJS.Timeout) };
    this.meter = new EngineCpuMeter(deps.metrics);
    this.leaderReg = fencedRegistry(deps.registry, () => this.writer, 'rollouts.write');
    // The engine's awaits are on the publisher and on re-issues: the meter stops counting while they wait.
    // Re-issues are leader work (a rollback, a quarantine): they write through the fenced leader view.
    this.publisher = this.meter.wrap(deps.publisher);
    const { reissue, reissueAgent, ...shared } = deps;
    this.steps = new RolloutSteps({
      ...shared,
      registry: this.leaderReg,
      apiRegistry: deps.registry,
      publisher: this.publisher,
      reissue: (prev) => this.meter.waitOn(reissue(prev, this.leaderReg)),
      ...(reissueAgent ? { reissueAgent: (prev: number) => this.meter.waitOn(reissueAgent(prev, this.leaderReg)) } : {}),
      log: this.log,
      now: this.now,
    });
    this.agents = new AgentConverger({ registry: this.leaderReg, agent: this.steps.of({ kind: 'agent' }), give: (r, item, id) => this.steps.give(r, item, [id], true), log: this.log, ...(deps.metrics ? { metrics: deps.metrics } : {}) });
  }

  static async create(deps: RolloutEngineDeps): Promise<RolloutEngine> {
    const e = new RolloutEngine(deps);
    await e.start();
    return e;
  }

  private get reg(): StoreRegistry {
    return this.deps.registry;
  }

  /**
   * Subscribes to signals, starts the tick, republishes retained state, and resumes every non-terminal rollout.
   * `writer`: the leader's registry writes for the epoch this replica was elected under
   * (`Replica.writer(registry, epoch)`); every write of the tick and the steps goes through it until `stop`.
   * Without one (a single process, tests) they are plain registry transactions.
   */
  async start(writer?: LeaderWriter): Promise<void> {
    if (this.interval !== undefined) return;
    this.writer = writer;
    const s = this.deps.signals;
    if (s) {
      const onEvent = (e: FleetSignalMap['event'][0]): void => {
        this.meter.event('event');
        if (e.applied) this.requestEvaluate();
      };
      const onStatus = (e: FleetSignalMap['status'][0]): void => this.onStatus(e.deviceId, e.status.state === 'online');
      const onTelemetry = (e: FleetSignalMap['telemetry'][0]): void => this.onTelemetry(e.deviceId);
      s.on('event', onEvent);
      s.on('status', onStatus);
      s.on('telemetry', onTelemetry);
      this.offs = [() => s.off('event', onEvent), () => s.off('status', onStatus), () => s.off('telemetry', onTelemetry)];
    }
    this.interval = this.timers.setInterval(() => {
      this.cache = undefined;
      this.requestEvaluate();
    }, (this.deps.tickSeconds ?? 10) * 1000);
    const resumed = await this.steps.read(activeRollouts);
    if (resumed.length) this.log.info({ rollouts: resumed.map((r) => `${r.id}:${r.state}`) }, 'rollouts/resuming');
    await this.exclusive(async () => {
      if (this.deps.republishOnStart ?? true) await this.publisher.republishAll(this.leaderReg);
      await this.steps.evaluateAll();
    });
  }

  /** Stops the tick and the signals, then waits for queued work. */
  async stop(): Promise<void> {
    if (this.interval !== undefined) this.timers.clearInterval(this.interval);
    this.interval = undefined;
    for (const off of this.offs) off();
    this.offs = [];
    await this.idle();
    this.writer = undefined;
  }

  dispose(): Promise<void> {
    return this.stop();
  }

  /** Resolves once no queued work is left (tests, shutdown). */
  async idle(): Promise<void> {
    let t: Promise<unknown>;
    do {
      t = this.tail;
      await Promise.all([t, ...this.handling]);
    } while (t !== this.tail || this.handling.size);
  }

  /**
   * Starts a rollout: stores it, gives the first wave the release (chunks + retained desired) and takes
   * over the devices it shares with an active rollout of the same model (superseded there). Throws
   * RolloutError (not_found, invalid).
   */
  create(request: RolloutRequest): Promise<RolloutRow> {
    const parsed = rolloutRequestSchema.safeParse(request);
    if (!parsed.success) {
      const why = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
      return Promise.reject(new RolloutError(`invalid rollout: ${why}`, 'invalid'));
    }
    return this.exclusive(async () => {
      const act = this.leads();
      const row = await this.steps.create(parsed.data, { act });
      if (!act) return row;
      await this.asLeader(() => this.steps.step(row.id));
      return this.steps.mustGet(row.id);
    });
  }

  /** Stops an active rollout where it is. No rollback: devices keep what they installed (see `rollback`). */
  abort(id: string, reason = 'aborted by operator'): Promise<RolloutRow> {
    return this.exclusive(async () => {
      const r = await this.steps.mustGet(id);
      if (!ABORTABLE.includes(r.state)) throw new RolloutError(`rollout ${id} is ${r.state}`, 'conflict');
      await this.steps.apiWrite((tx, t) => setRollout(tx, t, id, this.now(), { state: 'aborted', reason, pausedAt: null }));
      this.log.warn({ rollout: id, reason }, 'rollouts/aborted');
      if (this.leads()) await this.steps.gcQuietly();
      return this.steps.mustGet(id);
    });
  }

  /**
   * Re-issues the previous release under a new sequence to every device that was given this
   * rollout's release. Only the latest rollout of a model can be rolled back (an older one would
   * undo a newer release). A failing re-issue leaves it `rolling_back`; the tick retries.
   */
  rollback(id: string, reason = 'rolled back by operator'): Promise<RolloutRow> {
    return this.exclusive(async () => {
      const r = await this.steps.mustGet(id);
      if (!ROLLBACKABLE.includes(r.state)) throw new RolloutError(`rollout ${id} is ${r.state}`, 'conflict');
      const latest = (await this.list({ model: r.model, limit: 1 }))[0];
      if (latest?.id !== id) throw new RolloutError(`rollout ${id} is not the latest of model ${r.model} (${latest?.id} is)`, 'conflict');
      if (r.state !== 'rolling_back') await this.steps.apiWrite((tx, t) => setRollout(tx, t, id, this.now(), { state: 'rolling_back', reason }));
      this.log.warn({ rollout: id, reason }, 'rollouts/rollback-requested');
      // On a follower the leader's tick continues a rolling_back rollout.
      if (this.leads()) await this.asLeader(async () => this.steps.continueRollback(await this.steps.mustGet(id)));
      return this.steps.mustGet(id);
    });
  }

  /**
   * Stops an active rollout where it is: no new wave, no replacement, and device timeouts stop (they
   * move forward by the paused time on resume). Installs are still recorded and failures still handled.
   */
  pause(id: string, reason = 'paused by operator'): Promise<RolloutRow> {
    return this.exclusive(async () => {
      const r = await this.steps.mustGet(id);
      if (!PAUSABLE.includes(r.state)) throw new RolloutError(`rollout ${id} is ${r.state}`, 'conflict');
      if (r.pausedAt) throw new RolloutError(`rollout ${id} is already paused (${r.pauseReason})`, 'conflict');
      const now = this.now();
      await this.steps.apiWrite((tx, t) => setRollout(tx, t, id, now, { pausedAt: now.toISOString(), pauseReason: reason }, { from: r.state, to: r.state, reason: `paused: ${reason}` }));
      this.log.warn({ rollout: id, reason }, 'rollouts/paused');
      return this.steps.mustGet(id);
    });
  }

  /** Continues a paused rollout; the deadlines of devices still pending move forward by the paused time. */
  resume(id: string, reason = 'resumed by operator'): Promise<RolloutRow> {
    return this.exclusive(async () => {
      const r = await this.steps.mustGet(id);
      if (!r.pausedAt || !PAUSABLE.includes(r.state)) throw new RolloutError(`rollout ${id} is not paused (${r.state})`, 'conflict');
      const now = this.now();
      const pausedMs = Math.max(0, now.getTime() - Date.parse(r.pausedAt));
      const steps = this.steps;
      await steps.apiWrite(function* (tx, t) {
        for (const d of yield* steps.desiredRows(tx, t, { id, wave: Number.MAX_SAFE_INTEGER })) {
          if (!d.deadlineAt) continue;
          yield* patchMember(tx, t, id, d.deviceId, { deadlineAt: new Date(Date.parse(d.deadlineAt) + pausedMs).toISOString() });
        }
        yield* setRollout(tx, t, id, now, { pausedAt: null, pauseReason: null, replacements: 0, canaryHealthySince: null }, { from: r.state, to: r.state, reason: `${reason} after ${Math.round(pausedMs / 1000)} s (was: ${r.pauseReason})` });
      });
      this.log.info({ rollout: id, pausedSeconds: pausedMs / 1000 }, 'rollouts/resumed');
      if (this.leads()) await this.steps.evaluateAll();
      return this.steps.mustGet(id);
    });
  }

  /** The rollout with its devices, counts per wave, coverage and latest transitions (view.ts). */
  get(id: string): Promise<RolloutView | undefined> {
    return rolloutView(this.reg, (r) => this.steps.of(r), id);
  }

  /** Newest first. */
  async list({ model, state, limit = 100 }: { model?: string; state?: RolloutState; limit?: number } = {}): Promise<RolloutRow[]> {
    const { rollouts } = this.reg.t;
    const where = and(model ? eq(rollouts.model, model) : undefined, state ? eq(rollouts.state, state) : undefined);
    return this.reg.q.select().from(rollouts).where(where).orderBy(desc(rollouts.createdAt), desc(rollouts.id)).limit(limit);
  }

  /**
   * A new device gets the release its target currently runs: that of the latest fleet-stage or
   * completed rollout whose target includes it (or that rollout's re-issue if it was rolled back),
   * when its desired release is missing or older. Also runs on every `online` status.
   */
  onDeviceProvisioned(deviceId: string, groups?: readonly string[]): Promise<void> {
    // On a follower: the device converges on the leader when the leader sees its online status.
    if (!this.leads()) return Promise.resolve();
    return this.exclusive(() => this.steps.converge(deviceId, groups));
  }

  /** Clears a revoked device's retained desired state; rollouts stop counting it. */
  onDeviceRevoked(deviceId: string): Promise<void> {
    return this.exclusive(async () => {
      const leads = this.leads();
      // On a follower the retained desired stays on the broker (the device's credentials are gone with it).
      if (leads) {
        await this.publisher.clearDesired(deviceId);
        await this.publisher.clearAgent(deviceId);
      }
      const { devices } = this.reg.t;
      await this.reg.q.update(devices).set({ desiredSeq: null, desiredAgentSeq: null }).where(eq(devices.id, deviceId));
      if (leads) await this.steps.evaluateAll();
    });
  }

  /**
   * Publishes every retained desired state and needed artifact again (ReleasePublisher.republishAll),
   * in the queue. For a broker reconnect: a broker that crashed (or restarted without persistence)
   * may have lost retained chunks and desired states published since its last save.
   */
  republish(): Promise<{ artifacts: number; desired: number; failed: number }> {
    return this.exclusive(() => this.publisher.republishAll(this.leaderReg));
  }

  /** Re-evaluates every active rollout now. */
  evaluate(): Promise<void> {
    return this.exclusive(() => this.steps.evaluateAll());
  }

  /** Clears retained chunks nobody needs (ReleasePublisher.gcArtifacts), in the queue. */
  gc(): Promise<string[]> {
    return this.exclusive(() => this.publisher.gcArtifacts(this.leaderReg));
  }

  private leads(): boolean {
    return this.deps.leads?.() ?? true;
  }

  /**
   * The leader's part of an API call (the first step of a new rollout, a rollback's re-issue): a refusal
   * because another replica took over meanwhile (already logged and counted by the fence) leaves it to the
   * new leader's tick, and the API call, whose own write committed, still succeeds.
   */
  private async asLeader(fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      if (!(err instanceof StaleLeaderError)) throw err;
      this.log.warn({ action: err.action, epoch: err.myEpoch, currentEpoch: err.currentEpoch }, 'rollouts/left-to-the-new-leader');
    }
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(async () => {
      this.meter.resume();
      try {
        return await fn();
      } finally {
        this.meter.pauseSoon();
      }
    });
    this.tail = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /** Coalesces bursts of signals (and ticks) into one queued evaluation. */
  private requestEvaluate(): void {
    if (this.evalQueued) return;
    this.evalQueued = true;
    void this.exclusive(async () => {
      this.evalQueued = false;
      await this.steps.evaluateAll();
    }).catch((err) => this.log.error({ err }, 'rollouts/evaluate-failed'));
  }

  /** The cached active rollouts and converge candidates (see `cache`); concurrent signals share one read. */
  private snapshot(): Promise<Snapshot> {
    const version = rolloutsVersionNow();
    if (this.cache?.version !== version) {
      const snap = (async (): Promise<Snapshot> => ({
        active: await this.steps.read(activeRollouts),
        candidates: await this.steps.read((tx, t) => convergeCandidates(tx, t)),
        agentCandidates: await agentConvergeCandidates(this.reg),
      }))();
      const entry = { version, snap };
      this.cache = entry;
      // A failed read is not kept: the next signal reads again.
      snap.catch(() => {
        if (this.cache === entry) this.cache = undefined;
      });
    }
    return this.cache!.snap;
  }

  /** Runs a device signal's handler (it reads the registry), metered, tracked for `idle`, errors logged. */
  private handle(kind: 'status' | 'telemetry', deviceId: string, fn: () => Promise<void>): void {
    const p = this.meter.sync(fn).catch((err: unknown) => this.log.error({ err, deviceId }, `rollouts/${kind}-failed`));
    this.handling.add(p);
    void p.finally(() => this.handling.delete(p));
  }

  /**
   * A status: an online one may make the device converge (a late device, a returning one, its first
   * capabilities); a member's status may move its wave. With no rollout to converge to and none active,
   * this reads nothing.
   */
  private onStatus(deviceId: string, online: boolean): void {
    this.meter.event('status');
    this.handle('status', deviceId, async () => {
      const snap = await this.snapshot();
      const anyActive = snap.active.length > 0;
      if (online && (anyActive || snap.candidates.length || snap.agentCandidates.length)) {
        const converge = async (): Promise<void> => {
          const now = await this.snapshot(); // as of when it runs, not when it was queued
          if (now.active.length || now.candidates.length) await this.steps.converge(deviceId, undefined, { candidates: now.candidates, anyActive: now.active.length > 0 });
          if (now.agentCandidates.length) await this.agents.converge(deviceId, now.agentCandidates);
        };
        void this.exclusive(converge).catch((err) => this.log.error({ err, deviceId }, 'rollouts/converge-failed'));
      }
      if (anyActive && (await this.steps.read((tx, t) => activeMemberships(tx, t, deviceId))).length) this.requestEvaluate();
    });
  }

  private onTelemetry(deviceId: string): void {
    this.meter.event('telemetry');
    this.handle('telemetry', deviceId, async () => {
      // Only the current wave's telemetry moves a soak; the tick covers the rest.
      if ((await this.snapshot()).active.length && (await this.steps.read((tx, t) => activeMemberships(tx, t, deviceId))).some((m) => m.inCurrentWave)) this.requestEvaluate();
    });
  }
}
