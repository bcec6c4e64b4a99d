import { randomUUID } from 'node:crypto';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import type { DeviceEvent, SignedManifest, Telemetry } from '../../shared/protocol/index.js';
import { IncompatibleReleaseError, signedManifestOf, type ReleasePublisher } from '../fleet/publisher.js';
import type { FleetSignalMap, FleetSignals } from '../fleet/ingest.js';
import type { StoreRegistry } from '../registry/open.js';
import type { RolloutRow, ShadowDeviceRow, ShadowRunRow } from '../registry/schema.js';
import { RolloutError, type RolloutRequest, type RolloutTarget } from '../rollouts/policy.js';
import { capabilitiesKnown } from '../rollouts/steps.js';
import { run as runStore, targetedDevices } from '../rollouts/store.js';
import { eq } from 'drizzle-orm';
import { q, type Tables, type TxDb } from '../registry/tx.js';
import { agreementGate, type ShadowSwitchDecision, type ShadowSwitchGate } from './switch-gate.js';
import { recordReleaseShadowEval } from './store.js';
import { releaseBySeq } from '../rounds/releases.js';
import { StaleLeaderError } from '../cluster/fence.js';
import { leaderWriter, type LeaderWriter } from '../cluster/fenced-tx.js';
import { devicesOf, getRun, insertRun, listRuns, recordShadowTelemetry, runOfRollout, setDevice, setDeviceIn, setRun, setRunIn, shadowingRunOf, type ShadowRunState } from './run-store.js';

export interface ShadowRolloutsDeps {
  registry: StoreRegistry;
  publisher: Pick<ReleasePublisher, 'publishDesired' | 'clearDesired' | 'ensureChunks'>;
  /** Signs release `candidateSeq` as a shadow manifest with a new sequence (cloud/rounds signShadowManifest). */
  signShadow(candidateSeq: number, until: Date): Promise<{ seq: number; signed: SignedManifest }>;
  /** Re-issues release `seq` (same bytes) at a new sequence; returns it (cloud/rounds reissueRelease). */
  reissue(seq: number): Promise<number>;
  /** Starts the rollout of the switch (the RolloutEngine). */
  rollouts: { create(request: RolloutRequest): Promise<RolloutRow> };
  /** Whether the window's end switches; default {@link agreementGate}. cloud/server.ts adds the teacher-labelled gate (teacher-gate.ts). */
  gate?: ShadowSwitchGate;
  /** Telemetry with `shadow` figures is recorded as it arrives. */
  signals?: FleetSignals;
  log?: Logger;
  now?: () => Date;
  /** Window checks and retries of unsent devices; default 10 s. */
  tickSeconds?: number;
  newId?: () => string;
  /**
   * A cluster replica (issue 15 item 4): the API calls (`create`, `switch`, `abort`) only write the registry
   * (a run with `pending` devices, a run `switching` / `aborting`) and the leader's tick acts on them, on
   * whichever replica the call came in. Default false: one process acts at once, as before.
   */
  clustered?: boolean;
  /** The leader's fenced registry writer for the epoch `start(epoch)` got (Replica.writer); default unfenced. */
  writer?: (epoch: number) => LeaderWriter;
}

export interface ShadowStartRequest {
  model: string;
  releaseSeq: number;
  target: RolloutTarget;
  /** The rollout policy the switch starts with (waves, soak, thresholds): what `POST /v1/rollouts` takes. */
  policy: Omit<RolloutRequest, 'model' | 'releaseSeq' | 'target'>;
  minutes: number;
  /** Switch by itself at the window's end when the gate passes; default true. */
  autoSwitch?: boolean;
  /** Default 0.95 and 50. */
  minAgreement?: number;
  minRequests?: number;
}

export interface ShadowView {
  run: ShadowRunRow;
  devices: ShadowDeviceRow[];
  /** What the gate would answer now (the decision at the window's end for a finished run). */
  decision: ShadowSwitchDecision;
}

export const DEFAULT_MIN_AGREEMENT = 0.95;
export const DEFAULT_MIN_REQUESTS = 50;

/**
 * On-device shadow runs (issue 13 item 4), cloud side: sends a candidate as a signed `manifest.shadow`
 * release to a rollout's targets for a window (devices without the `manifest.shadow` capability are
 * `incompatible`: compat.ts desiredFor), records the agreement and latency they report, and switches:
 * re-issues the candidate's bytes at a new sequence as a normal release and starts its rollout with the
 * requested policy. The switch is the operator's (`switch`), or the window's end when the gate passes
 * (gate.ts). A run that ends without a switch gives each device its normal desired back. All state is in
 * the DB; one queue serialises ticks, signals and API calls.
 */
export class ShadowRollouts {
  private readonly log: Logger;
  private readonly now: () => Date;
  private readonly gate: ShadowSwitchGate;
  private tail: Promise<unknown> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  private off: (() => void) | undefined;
  /** The leader path's run and device writes: fenced on the epoch of `start(epoch)` on a cluster. */
  private writer: LeaderWriter;

  constructor(private readonly deps: ShadowRolloutsDeps) {
    this.log = deps.log ?? silentLogger;
    this.now = deps.now ?? (() => new Date());
    this.gate = deps.gate ?? agreementGate;
    this.writer = leaderWriter(deps.registry, 0);
  }

  private get db(): StoreRegistry {
    return this.deps.registry;
  }

  /**
   * As leader (epoch 0: one process): ticks, and (one process) records the devices' figures. A cluster
   * replica records them on every replica instead (`listen`, cloud/server.ts): ingest runs on all of them.
   */
  start(epoch = 0): void {
    if (this.timer) return;
    this.writer = this.deps.writer?.(epoch) ?? leaderWriter(this.deps.registry, epoch);
    if (!this.deps.clustered) this.listen();
    this.timer = setInterval(() => void this.tick().catch((err: unknown) => this.log.error({ err }, 'shadow/tick-failed')), (this.deps.tickSeconds ?? 10) * 1000);
    this.timer.unref();
  }

  /** Records the shadow figures of telemetry and the refusals in device events (registry writes only). */
  listen(): () => void {
    const s = this.deps.signals;
    if (s && !this.off) {
      const onTelemetry = (e: FleetSignalMap['telemetry'][0]): void => void this.onTelemetry(e.deviceId, e.telemetry);
      const onEvent = (e: FleetSignalMap['event'][0]): void => void this.onEvent(e.deviceId, e.event);
      s.on('telemetry', onTelemetry);
      s.on('event', onEvent);
      this.off = () => (s.off('telemetry', onTelemetry), s.off('event', onEvent), (this.off = undefined));
    }
    return () => this.off?.();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    if (!this.deps.clustered) this.off?.();
    await this.tail.catch(() => undefined);
  }

  /** On a cluster: what an API call recorded is acted on now when this replica leads, else at the leader's next tick. */
  private kick(): void {
    if (this.timer) void this.tick().catch((err: unknown) => this.log.error({ err }, 'shadow/tick-failed'));
  }

  /** Starts a run: signs the shadow manifest and sends it to the target's devices. Throws RolloutError. */
  create(req: ShadowStartRequest): Promise<ShadowRunRow> {
    return this.exclusive(async () => {
      const rel = await releaseBySeq(this.db, req.releaseSeq);
      if (!rel || rel.model !== req.model) throw new RolloutError(`release ${req.releaseSeq} of model ${req.model} not found`, 'not_found');
      const targets = (await runStore(this.deps.registry, (tx, t) => targetedDevices(tx, t, req.target))).map((d) => d.id);
      if (!targets.length) throw new RolloutError('the target matches no device', 'invalid');
      const now = this.now();
      const until = new Date(now.getTime() + req.minutes * 60_000);
      const { seq, signed } = await this.deps.signShadow(req.releaseSeq, until);
      const id = this.deps.newId?.() ?? `shadow-${randomUUID().slice(0, 8)}`;
      const run = await insertRun(
        this.db,
        {
          id,
          model: req.model,
          releaseSeq: req.releaseSeq,
          shadowSeq: seq,
          signed,
          target: req.target,
          policy: req.policy,
          until: until.toISOString(),
          autoSwitch: req.autoSwitch ?? true,
          minAgreement: req.minAgreement ?? DEFAULT_MIN_AGREEMENT,
          minRequests: req.minRequests ?? DEFAULT_MIN_REQUESTS,
        },
        targets,
        now,
      );
      this.log.info({ run: id, model: req.model, release: req.releaseSeq, shadowSeq: seq, until: run.until, devices: targets.length, clustered: !!this.deps.clustered }, 'shadow/started');
      // A cluster replica: the devices stay `pending` until the leader's tick sends (ensureChunks then too).
      if (this.deps.clustered) this.kick();
      else await this.send(run);
      return (await getRun(this.db, id))!;
    });
  }

  async get(id: string): Promise<ShadowView | undefined> {
    const run = await getRun(this.db, id);
    return run && this.view(run);
  }

  /** The run whose switch started `rolloutId` (the rollout view shows its figures). */
  async forRollout(rolloutId: string): Promise<ShadowView | undefined> {
    const run = await runOfRollout(this.db, rolloutId);
    return run && this.view(run);
  }

  list(state?: ShadowRunState): Promise<ShadowRunRow[]> {
    return listRuns(this.db, state ? { state } : {});
  }

  /** The operator's switch (any time during the window, whatever the gate says). Throws RolloutError. */
  switch(id: string, reason = 'switched by operator'): Promise<ShadowView> {
    return this.exclusive(async () => {
      const run = await this.mustBeShadowing(id);
      if (this.deps.clustered) return this.request(run, 'switching', reason);
      // The operator overrides the run's decision, not the per-device evidence: devices the gate holds are held.
      const decision = await this.gate({ run, devices: await devicesOf(this.db, run.id), now: this.now() });
      await this.doSwitch(run, reason, decision);
      return (await this.get(id))!;
    });
  }

  /** Ends a run with no switch: devices drop the candidate at `until`, and get their normal desired back now. */
  abort(id: string, reason = 'aborted by operator'): Promise<ShadowView> {
    return this.exclusive(async () => {
      const run = await this.mustBeShadowing(id);
      if (this.deps.clustered) return this.request(run, 'aborting', reason);
      await this.end(run, 'aborted', reason);
      return (await this.get(id))!;
    });
  }

  /**
   * Sends to devices still pending; ends runs whose window closed (switch when auto and the gate passes);
   * carries out the switches and aborts that a cluster replica's API recorded (`switching`, `aborting`).
   */
  tick(): Promise<void> {
    return this.exclusive(async () => {
      const now = this.now();
      for (const run of await listRuns(this.db, { state: ['switching', 'aborting'], limit: 1000 })) {
        const reason = run.reason ?? `${run.state === 'switching' ? 'switched' : 'aborted'} by operator`;
        try {
          if (run.state === 'aborting') await this.end(run, 'aborted', reason);
          else await this.doSwitch(run, reason, await this.gate({ run, devices: await devicesOf(this.db, run.id), now }));
        } catch (err) {
          // A stale leader stops here (the next leader carries it out); one failing run does not hold up the others.
          if (err instanceof StaleLeaderError) throw err;
          this.log.error({ err, run: run.id, state: run.state }, 'shadow/request-failed: retried at the next tick');
        }
      }
      for (const run of await listRuns(this.db, { state: 'shadowing', limit: 1000 })) {
        if (Date.parse(run.until) > now.getTime()) {
          await this.send(run);
          continue;
        }
        const decision = await this.gate({ run, devices: await devicesOf(this.db, run.id), now });
        if (run.autoSwitch && decision.switch) await this.doSwitch(run, `window ended, gate passed: ${decision.reason}`, decision);
        else await this.end(run, 'expired', run.autoSwitch ? `window ended, gate not passed: ${decision.reason}` : 'window ended with no switch');
      }
    });
  }

  /** Telemetry's `shadow` figures onto the run that sent that shadow release. */
  async onTelemetry(deviceId: string, t: Telemetry): Promise<void> {
    if (!t.shadow) return;
    try {
      const runId = await recordShadowTelemetry(this.db, deviceId, t.shadow, this.now());
      if (!runId) this.log.debug({ deviceId, release: t.shadow.release }, 'shadow/telemetry-unmatched');
    } catch (err) {
      this.log.error({ err, deviceId }, 'shadow/telemetry-failed');
    }
  }

  /** A device refused the shadow release (bad download, self-test, expired…): recorded on its row with the reason. */
  async onEvent(deviceId: string, ev: DeviceEvent): Promise<void> {
    if (ev.type !== 'rejected' || ev.release === null) return;
    try {
      const run = await shadowingRunOf(this.db, deviceId, ev.release);
      if (!run) return;
      await setDevice(this.db, run.id, deviceId, { state: 'refused', reason: (ev.reason ?? ev.detail ?? 'rejected').slice(0, 256) }, this.now());
      this.log.warn({ run: run.id, deviceId, reason: ev.reason }, 'shadow/refused');
    } catch (err) {
      this.log.error({ err, deviceId }, 'shadow/event-failed');
    }
  }

  /**
   * Publishes the shadow desired again to the devices of every running window: after the rollout
   * engine's `republishAll` (cloud start, broker reconnect), which retains each device's normal desired,
   * so a device that restarts during the window is sent the candidate again.
   */
  republish(): Promise<number> {
    return this.exclusive(async () => {
      let n = 0;
      for (const run of await listRuns(this.db, { state: 'shadowing', limit: 1000 })) {
        if (Date.parse(run.until) <= this.now().getTime()) continue;
        for (const d of await devicesOf(this.db, run.id, ['sent', 'running'])) {
          try {
            await this.deps.publisher.publishDesired(d.deviceId, run.signed as SignedManifest);
            n++;
          } catch (err) {
            this.log.warn({ err, run: run.id, deviceId: d.deviceId }, 'shadow/republish-failed');
          }
        }
      }
      return n;
    });
  }

  private async view(run: ShadowRunRow): Promise<ShadowView> {
    const devs = await devicesOf(this.db, run.id);
    return { run, devices: devs, decision: await this.gate({ run, devices: devs, now: this.now() }) };
  }

  /** A cluster replica's switch or abort: recorded on the run (compare-and-set), carried out by the leader's tick. */
  private async request(run: ShadowRunRow, state: 'switching' | 'aborting', reason: string): Promise<ShadowView> {
    if (!(await setRun(this.db, run.id, 'shadowing', { state, reason }, this.now()))) throw new RolloutError(`shadow run ${run.id} is no longer shadowing`, 'conflict');
    this.log.info({ run: run.id, state, reason }, 'shadow/requested: the leader carries it out');
    this.kick();
    return (await this.get(run.id))!;
  }

  private async mustBeShadowing(id: string): Promise<ShadowRunRow> {
    const run = await getRun(this.db, id);
    if (!run) throw new RolloutError(`shadow run ${id} not found`, 'not_found');
    if (run.state !== 'shadowing') throw new RolloutError(`shadow run ${id} is ${run.state}`, 'conflict');
    return run;
  }

  /** Publishes the shadow desired to each pending device; no capability → `incompatible`, unknown yet → stays pending. */
  private async send(run: ShadowRunRow): Promise<void> {
    const now = this.now();
    const pending = await devicesOf(this.db, run.id, ['pending']);
    if (!pending.length) return;
    // The candidate's chunks first (a no-op once `chunks_published`): a cluster replica's API sent nothing.
    const rel = await releaseBySeq(this.db, run.releaseSeq);
    if (rel) await this.deps.publisher.ensureChunks(this.deps.registry, rel);
    for (const d of pending) {
      const { devices } = this.db.t;
      const [dev] = await this.db.q.select().from(devices).where(eq(devices.id, d.deviceId)).limit(1);
      if (!dev || dev.revoked) continue;
      try {
        await this.deps.publisher.publishDesired(d.deviceId, run.signed as SignedManifest);
        await this.writer.tx('shadow.send', (tx, t) => setDeviceIn(tx, t, run.id, d.deviceId, { state: 'sent' }, now));
      } catch (err) {
        if (!(err instanceof IncompatibleReleaseError)) {
          this.log.warn({ err, run: run.id, deviceId: d.deviceId }, 'shadow/send-failed: retried at the next tick');
        } else if (capabilitiesKnown(dev)) {
          await this.writer.tx('shadow.send', (tx, t) => setDeviceIn(tx, t, run.id, d.deviceId, { state: 'incompatible', reason: `missing capability: ${err.message}`.slice(0, 256) }, now));
        }
      }
    }
  }

  /** The switch: the candidate's bytes at a new sequence, rolled out as a normal release to the same target. */
  private async doSwitch(run: ShadowRunRow, reason: string, decision: ShadowSwitchDecision): Promise<void> {
    // Fenced before the re-issue and the rollout (their writes are not the shadow's): a stale leader stops here.
    await this.writer.tx('shadow.switch', (tx, t) => this.stillIn(tx, t, run));
    await this.restoreDesired(run);
    const seq = await this.deps.reissue(run.releaseSeq);
    // Before the rollout starts: its agreement gate reads them for its first wave.
    if (decision.evidence?.length) {
      const line = (await releaseBySeq(this.db, run.releaseSeq))?.cohort ?? null;
      await recordReleaseShadowEval(this.deps.registry, seq, `shadow:${run.id}`, run.model, line, decision.evidence);
    }
    const policy = run.policy as ShadowStartRequest['policy'];
    const rollout = await this.deps.rollouts.create({ ...policy, model: run.model, releaseSeq: seq, target: run.target as RolloutTarget });
    const at = this.now();
    await this.writer.tx('shadow.switch', (tx, t) => setRunIn(tx, t, run.id, run.state as ShadowRunState, { state: 'switched', reason, switchedSeq: seq, rolloutId: rollout.id }, at));
    this.log.info({ run: run.id, release: run.releaseSeq, switchedSeq: seq, rollout: rollout.id, reason }, 'shadow/switched');
  }

  private async end(run: ShadowRunRow, state: 'expired' | 'aborted', reason: string): Promise<void> {
    await this.restoreDesired(run);
    const at = this.now();
    await this.writer.tx(`shadow.${state}`, (tx, t) => setRunIn(tx, t, run.id, run.state as ShadowRunState, { state, reason }, at));
    this.log.warn({ run: run.id, release: run.releaseSeq, state, reason }, 'shadow/ended');
  }

  /**
   * Each device the shadow was sent to gets its own desired release back as the retained `desired`
   * (or none), so a device that restarts later is not sent the ended shadow again. What it runs is
   * untouched: a device ignores a desired it already runs.
   */
  private async restoreDesired(run: ShadowRunRow): Promise<void> {
    for (const d of await devicesOf(this.db, run.id, ['sent', 'running', 'dropped'])) {
      const { devices } = this.db.t;
      const [dev] = await this.db.q.select({ desiredSeq: devices.desiredSeq }).from(devices).where(eq(devices.id, d.deviceId)).limit(1);
      const rel = dev?.desiredSeq == null ? undefined : await releaseBySeq(this.db, dev.desiredSeq);
      try {
        if (rel) await this.deps.publisher.publishDesired(d.deviceId, signedManifestOf(rel));
        else await this.deps.publisher.clearDesired(d.deviceId);
      } catch (err) {
        this.log.warn({ err, run: run.id, deviceId: d.deviceId }, 'shadow/restore-desired-failed');
      }
    }
  }

  /** Throws unless the run is still in the state this step read (a fenced transaction's first check). */
  private *stillIn(tx: TxDb, t: Tables, run: ShadowRunRow): Generator<PromiseLike<unknown>, void, unknown> {
    const [row] = yield* q(tx.select({ state: t.shadowRuns.state }).from(t.shadowRuns).where(eq(t.shadowRuns.id, run.id)).limit(1));
    if (row?.state !== run.state) throw new RolloutError(`shadow run ${run.id} is ${row?.state ?? 'gone'}, not ${run.state}`, 'conflict');
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn);
    this.tail = run.catch(() => undefined);
    return run;
  }
}
