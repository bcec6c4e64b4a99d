import { randomUUID } from 'node:crypto';
import { and, desc, eq, lte } from 'drizzle-orm';
import type { Logger } from '../../shared/log/index.js';
import { mapLimit } from '../../shared/util/map-limit.js';
import { AgentIncompatibleError, IncompatibleReleaseError, type ReleasePublisher } from '../fleet/publisher.js';
import type { StoreRegistry } from '../registry/open.js';
import type { DeviceRow, ReleaseRow, RolloutRow } from '../registry/schema.js';
import { q, type Tables, type TxBody, type TxDb } from '../registry/tx.js';
import { agentDeliverable, agentTargets, modelDeliverable, type Deliverable, type DeliveryItem } from './deliverable.js';
import { DEVICE_CAPABILITIES } from '../../shared/protocol/compat.js';
import { RolloutError, assignWaves, rollbackDue, wavesOf, type RolloutRequestParsed } from './policy.js';
import { supersedeOverlap } from './supersede.js';
import { devicesOnLine, releaseCohort } from './lines.js';
import { convergeDevice } from './converge.js';
import { activeRollouts, countsByState, getRollout, logTransition, members, moveMember, patchMember, rolloutsChanged, run, setRollout, targetedDevices, type RolloutMember } from './store.js';
import { noteDeviceSteps } from './notes.js';
import { WaveChecks } from './waves.js';
import { AgreementGate } from './agreement.js';

export interface RolloutStepsDeps {
  /**
   * The registry the leader's work writes (ticks, waves, rollbacks, late devices): on a cluster a fenced view
   * (cluster/fenced-tx.ts `fencedRegistry`), whose `tx` is refused once another replica took over.
   */
  registry: StoreRegistry;
  /** The registry itself, for the API's writes (any replica may make them; never fenced). Default: `registry`. */
  apiRegistry?: StoreRegistry;
  publisher: ReleasePublisher;
  reissue(previousSeq: number): Promise<number>;
  /** Re-issues an agent release at a higher agentSeq (issue 14); agent rollbacks need it. */
  reissueAgent?(agentSeq: number): Promise<number>;
  log: Logger;
  now: () => Date;
  newId?: () => string;
  requireTelemetry?: boolean;
  concurrency?: number;
}

const INSERT_CHUNK = 500;
/** Devices whose rows give() marks in one transaction before publishing their desired. */
const GIVE_BATCH = 256;

/** A device's row before give() marked it (a failed publish puts its desired back). */
type Prev = Pick<DeviceRow, 'desiredSeq' | 'lastSeen' | 'online' | 'protocolVersion' | 'capabilities'>;

/** Why a `desired` row has nothing sent yet (RolloutDeviceRow.awaitingCapabilities). */
export const AWAITING_REASON = 'capabilities unknown: the device never reported a status; sent when it does';

/**
 * Whether the device ever said what it understands: a device that reported a status (or is online) did,
 * even with no capabilities (a protocol-1 daemon). One that never connected did not.
 */
export function capabilitiesKnown(d: Pick<DeviceRow, 'lastSeen' | 'online' | 'protocolVersion' | 'capabilities'>): boolean {
  return d.lastSeen !== null || d.online || d.protocolVersion !== null || d.capabilities !== null;
}

/**
 * The rollout state machine: each method reads the DB, publishes, and writes the next state. Not
 * re-entrant: `RolloutEngine` runs every call through its queue.
 *
 *   pending ──(wave 0 given the release)──► canary ──(wave passed: its online devices settled, failures
 *   under the threshold, installed ones healthy for soakSeconds)──► fleet (wave 1, 2, …) ──(every
 *   device terminal)──► completed | superseded
 *   canary|fleet ──(failed + quarantined ≥ threshold)──► rolling_back ──(re-issue published)──► rolled_back
 *
 * Offline devices never hold a wave: it waits only for devices that are online; the others converge
 * through their retained desired or become `timed_out`.
 */
export class RolloutSteps {
  readonly log: Logger;
  readonly now: () => Date;
  private readonly waves: WaveChecks;
  readonly agreement: AgreementGate;
  private readonly kinds: Record<'model' | 'agent', Deliverable>;

  constructor(readonly deps: RolloutStepsDeps) {
    this.log = deps.log;
    this.now = deps.now;
    this.agreement = new AgreementGate(deps);
    this.kinds = { model: modelDeliverable(deps), agent: agentDeliverable(deps) };
    this.waves = new WaveChecks({
      ...deps,
      give: (r, item, ids) => this.give(r, item, ids, true),
      deliverable: (r) => this.of(r),
      // The agreement gate judges model releases on the devices' traffic; an agent release has no such evidence.
      screen: (r, ids) => (r.kind === 'model' ? this.agreement.screen(r, ids) : Promise.resolve(ids)),
      reissueAbove: (r, prev, floor) => this.reissueAbove(r, prev, floor),
      read: (body) => this.read(body),
      write: (body) => this.write(body),
    });
  }

  private get reg(): StoreRegistry {
    return this.deps.registry;
  }

  /** Store steps outside a transaction (reads, single writes: store.ts `run`). */
  read<R>(body: TxBody<R>): Promise<R> {
    return run(this.reg, body);
  }

  /**
   * The leader's store steps in one transaction (fenced on a cluster); the cache of rollouts is dropped once
   * it committed (store.ts `rolloutsChanged`).
   */
  async write<R>(body: TxBody<R>): Promise<R> {
    try {
      return await this.reg.tx(body);
    } finally {
      rolloutsChanged();
    }
  }

  /** An API call's own store steps (create, pause, abort, …) in one transaction: never fenced (any replica serves the API). */
  async apiWrite<R>(body: TxBody<R>): Promise<R> {
    try {
      return await (this.deps.apiRegistry ?? this.reg).tx(body);
    } finally {
      rolloutsChanged();
    }
  }

  /** The leader's write of rows other than `rollouts` (a member's flags, a device's desired): fenced, the cache kept. */
  tx<R>(body: TxBody<R>): Promise<R> {
    return this.reg.tx(body);
  }

  /** What the rollout ships: a model release or an agent release (issue 14). */
  of(r: Pick<RolloutRow, 'kind'>): Deliverable {
    return this.kinds[r.kind];
  }

  async mustGet(id: string): Promise<RolloutRow> {
    const r = await this.read((tx, t) => getRollout(tx, t, id));
    if (!r) throw new RolloutError(`rollout ${id} not found`, 'not_found');
    return r;
  }

  async release(seq: number): Promise<ReleaseRow> {
    const { releases } = this.reg.t;
    const [rel] = await this.reg.q.select().from(releases).where(eq(releases.seq, seq)).limit(1);
    if (!rel) throw new RolloutError(`release ${seq} not found`, 'not_found');
    return rel;
  }

  /**
   * Stores a new rollout (an API write). `act` (the leader): the artifact is checked first; the engine then
   * runs the first `step`. `act` false (a cluster follower): stored only; the leader's tick checks the
   * artifact and gives the first wave.
   */
  async create(req: RolloutRequestParsed, { act = true }: { act?: boolean } = {}): Promise<RolloutRow> {
    const kind = req.kind;
    let skipped: { id: string; reason: string }[] = [];
    let targeted = await this.read((tx, t) => targetedDevices(tx, t, req.target));
    /** The release line (issue 13): null = the base line; agent releases have one line per platform. */
    let lineCohort: string | null = null;
    if (kind === 'model') {
      const rel = await this.release(req.releaseSeq);
      if (rel.model !== req.model) throw new RolloutError(`release ${rel.seq} is of model ${rel.model}, not ${req.model}`, 'invalid');
      lineCohort = rel.cohort;
      // Issue 13: only the devices of the release's line (cohort members get their cohort's releases, never the base's).
      const inTargetAll = targeted;
      targeted = await this.read((tx, t) => devicesOnLine(tx, t, req.model, rel.seq, inTargetAll));
      if (!targeted.length && inTargetAll.length) {
        throw new RolloutError(`no provisioned device matches the target on the release's line (${rel.cohort === null ? 'base: every targeted device is in a cohort' : `cohort ${rel.cohort}`})`, 'invalid');
      }
    } else {
      const { agentReleases } = this.reg.t;
      const [rel] = await this.reg.q.select().from(agentReleases).where(eq(agentReleases.agentSeq, req.releaseSeq)).limit(1);
      if (!rel) throw new RolloutError(`agent release ${req.releaseSeq} not found`, 'not_found');
      if (req.model !== `agent:${rel.platform}`) throw new RolloutError(`agent release ${rel.agentSeq} is for ${rel.platform}, not ${req.model}`, 'invalid');
      // Agent targets (issue 14): devices whose last status names the platform and declares agent-update;
      // the others are recorded as incompatible with the reason, and never sent anything.
      ({ targeted, skipped } = agentTargets(targeted, rel.platform));
    }
    if (!targeted.length) throw new RolloutError(skipped.length ? `no device of the target can take it (${skipped.length} incompatible, e.g. ${skipped[0]!.id}: ${skipped[0]!.reason})` : 'no provisioned device matches the target', 'invalid');
    const id = (this.deps.newId ?? randomUUID)();
    const waves = wavesOf(req);
    const assigned = assignWaves(id, targeted, waves);
    // Before anything is stored: a missing or corrupt artifact fails the request, not a rollout.
    if (act) await (await this.of({ kind }).item(req.releaseSeq)).ensure();
    // Strictly increasing creation times: "latest rollout" must not depend on a random id tie-break.
    const { rollouts } = this.reg.t;
    const [last] = await this.reg.q.select({ at: rollouts.createdAt }).from(rollouts).orderBy(desc(rollouts.createdAt)).limit(1);
    const atDate = new Date(Math.max(this.now().getTime(), last ? Date.parse(last.at) + 1 : 0));
    const at = atDate.toISOString();
    const superseded = await this.apiWrite(function* (tx, t) {
      const ids = new Set(targeted.map((d) => d.id));
      const out: { rollout: string; devices: number; remaining: number }[] = [];
      for (const old of yield* activeRollouts(tx, t)) {
        // Superseding is per release line (model, cohort).
        if (old.model !== req.model || old.kind !== kind || old.state === 'rolling_back') continue;
        if (kind !== 'agent' && (yield* releaseCohort(tx, t, old.releaseSeq)) !== lineCohort) continue;
        out.push(yield* supersedeOverlap(tx, t, old, id, ids, atDate));
      }
      const { minFailures, failureThreshold, soakSeconds, deviceTimeoutSeconds, canaryGraceSeconds, agreementMargin } = req;
      yield* q(
        tx
          .insert(t.rollouts)
          .values({ id, model: req.model, kind, releaseSeq: req.releaseSeq, target: req.target, canaryShare: waves[0]!, waves, soakSeconds, failureThreshold, minFailures, deviceTimeoutSeconds, canaryGraceSeconds, agreementMargin, state: 'pending', createdAt: at, updatedAt: at }),
      );
      rolloutsChanged();
      yield* logTransition(tx, t, { rolloutId: id, at: atDate, from: null, to: 'pending', reason: `${kind === 'agent' ? 'agent release' : 'release'} ${req.releaseSeq} to ${targeted.length} device(s) in waves ${JSON.stringify(waves)}${skipped.length ? `; ${skipped.length} incompatible` : ''}` });
      for (let i = 0; i < targeted.length; i += INSERT_CHUNK) {
        const rows = targeted.slice(i, i + INSERT_CHUNK).map((d) => {
          const wave = assigned.get(d.id)!;
          return { rolloutId: id, deviceId: d.id, canary: wave === 0, wave, state: 'waiting', updatedAt: at };
        });
        yield* q(tx.insert(t.rolloutDevices).values(rows));
      }
      for (let i = 0; i < skipped.length; i += INSERT_CHUNK) {
        const rows = skipped.slice(i, i + INSERT_CHUNK).map((d) => ({ rolloutId: id, deviceId: d.id, canary: false, wave: waves.length - 1, state: 'incompatible', reason: d.reason, updatedAt: at }));
        yield* q(tx.insert(t.rolloutDevices).values(rows));
        for (const d of skipped.slice(i, i + INSERT_CHUNK)) yield* logTransition(tx, t, { rolloutId: id, deviceId: d.id, at: atDate, from: null, to: 'incompatible', reason: d.reason });
      }
      return out;
    });
    for (const s of superseded) this.log.info({ rollout: s.rollout, by: id, devices: s.devices, remaining: s.remaining }, 'rollouts/superseded');
    this.log.info({ rollout: id, model: req.model, kind, release: req.releaseSeq, devices: targeted.length, incompatible: skipped.length, waves, acted: act }, 'rollouts/created');
    // The first step (the canary's release) is the leader's: the engine runs it (`step`) when `act`.
    return this.mustGet(id);
  }

  async evaluateAll(): Promise<void> {
    for (const r of await this.read(activeRollouts)) {
      try {
        await this.step(r.id);
      } catch (err) {
        this.log.error({ err, rollout: r.id, state: r.state }, 'rollouts/step-failed');
      }
    }
  }

  /** One step of rollout `id`'s state machine (the leader's: its writes go through `registry`). */
  async step(id: string): Promise<void> {
    const r = await this.mustGet(id);
    switch (r.state) {
      case 'pending': {
        if (r.pausedAt) return;
        await (await this.of(r).item(r.releaseSeq)).ensure();
        await this.waves.startWave(r, 0);
        this.log.info({ rollout: id }, 'rollouts/canary');
        return this.step(id);
      }
      case 'canary':
      case 'fleet':
        return this.evalWaves(r);
      case 'rolling_back':
        return this.continueRollback(r);
    }
  }

  private async evalWaves(r: RolloutRow): Promise<void> {
    await this.waves.reconcile(r);
    // Failures are acted on even while paused: quarantine and rollback protect devices.
    const counts = await this.read((tx, t) => countsByState(tx, t, r.id, r.wave));
    if (counts.failed > 0) {
      if (rollbackDue(counts, r)) {
        const bad = counts.failed + counts.quarantined;
        return this.fail(r, `${bad} failed of ${counts.installed + bad} settled in waves 1..${r.wave + 1} (threshold: max(${r.minFailures}, ${r.failureThreshold} × settled))`);
      }
      await this.waves.quarantineFailed(r);
    }
    if (r.pausedAt) return;
    await this.waves.timeouts(r);
    await this.waves.giveWaiting(r);
    if (await this.waves.replaceOffline(r)) return;
    const w = wavesOf(r);
    const all = await this.read((tx, t) => countsByState(tx, t, r.id));
    if (r.wave >= w.length - 1) {
      // A failure that landed while this step awaited (a publish, the registry) is handled by the next step
      // (quarantine or rollback): a rollout never completes over an unhandled failure.
      if (all.waiting + all.desired + all.failed > 0) return;
      const total = Object.values(all).reduce((a, b) => a + b, 0);
      const state = all.superseded === total ? 'superseded' : 'completed';
      const summary = Object.entries(all).filter(([, n]) => n > 0).map(([s, n]) => `${n} ${s}`).join(', ');
      await this.write((tx, t) => setRollout(tx, t, r.id, this.now(), { state, reason: summary }));
      this.log.info({ rollout: r.id, counts: all }, `rollouts/${state}`);
      await this.gcQuietly();
      return;
    }
    if (await this.waves.wavePassed(r)) await this.waves.startWave(await this.mustGet(r.id), r.wave + 1);
  }

  private async fail(r: RolloutRow, reason: string): Promise<void> {
    await this.write((tx, t) => setRollout(tx, t, r.id, this.now(), { state: 'rolling_back', reason }));
    this.log.warn({ rollout: r.id, release: r.releaseSeq, reason }, 'rollouts/rolling-back');
    await this.continueRollback(await this.mustGet(r.id));
  }

  /**
   * A release with `prev`'s bytes under a sequence above `floor` (devices refuse a lower one): the one
   * this rollout already re-issued for `prev` when it is high enough, else a new re-issue (recorded).
   */
  private async reissueAbove(r: RolloutRow, prev: number, floor: number): Promise<number> {
    const known = { ...(r.quarantineSeqs ?? {}) };
    const have = known[String(prev)];
    if (have !== undefined && have > floor) return have;
    const seq = await this.of(r).reissue(prev);
    if (!(seq > floor)) throw new RolloutError(`re-issue of ${prev} got seq ${seq}, not above ${floor}: devices would refuse it`, 'invalid');
    known[String(prev)] = seq;
    await this.write((tx, t) => setRollout(tx, t, r.id, this.now(), { quarantineSeqs: known }));
    r.quarantineSeqs = known;
    this.log.info({ rollout: r.id, previous: prev, reissued: seq }, 'rollouts/reissued');
    return seq;
  }

  /** rolling_back → rolled_back: re-issue (once: its seq is persisted), then publish to every device given the bad release. */
  async continueRollback(r: RolloutRow): Promise<void> {
    let seq = r.rollbackSeq;
    if (seq === null) {
      const prev = (await this.of(r).item(r.releaseSeq)).parent;
      if (prev === null) {
        await this.write((tx, t) => setRollout(tx, t, r.id, this.now(), { state: 'aborted', reason: `${r.reason ?? 'rollback'}; no previous release to roll back to` }));
        this.log.error({ rollout: r.id, release: r.releaseSeq }, 'rollouts/no-previous-release');
        return;
      }
      const reissued = await this.reissueAbove(r, prev, r.releaseSeq);
      seq = reissued;
      await this.write((tx, t) => setRollout(tx, t, r.id, this.now(), { rollbackSeq: reissued }));
    }
    const rel = await this.of(r).item(seq);
    await rel.ensure();
    // Devices still `waiting` never saw the bad release; superseded ones belong to a newer rollout.
    const given = (await this.read((tx, t) => members(tx, t, r.id))).filter((m) => m.state !== 'waiting' && m.state !== 'superseded');
    await this.give(r, rel, given.map((m) => m.deviceId), false);
    const now = this.now();
    const release = seq;
    await this.write(function* (tx, t) {
      yield* setRollout(tx, t, r.id, now, { state: 'rolled_back' });
      yield* noteDeviceSteps(tx, t, { rolloutId: r.id, deviceIds: given.map((m) => m.deviceId), to: 'rolled_back', at: now, reason: r.reason, release });
    });
    this.log.warn({ rollout: r.id, release: r.releaseSeq, rollbackSeq: seq, devices: given.length }, 'rollouts/rolled-back');
    await this.gcQuietly();
  }

  /**
   * Publishes `rel` as the retained desired of `ids`. With `markRows`, rows move waiting → desired (with
   * their device timeout) before the publish, so an `installed` event racing the PUBACK finds its row; a
   * failed publish puts the row and devices.desired_seq back.
   */
  async give(r: RolloutRow, rel: DeliveryItem, ids: string[], markRows: boolean): Promise<void> {
    const kind = this.of(r);
    const errors: unknown[] = [];
    for (let i = 0; i < ids.length; i += GIVE_BATCH) {
      const chunk = ids.slice(i, i + GIVE_BATCH);
      const now = this.now();
      const deadlineAt = new Date(now.getTime() + r.deviceTimeoutSeconds * 1000).toISOString();
      // One transaction per chunk: one WAL sync for its rows, not three per device (synchronous = FULL).
      const prevs = await this.write(function* (tx, t) {
        const out: (Prev | undefined)[] = [];
        for (const deviceId of chunk) {
          const { devices } = t;
          const [dev] = yield* q(tx.select({ lastSeen: devices.lastSeen, online: devices.online, protocolVersion: devices.protocolVersion, capabilities: devices.capabilities }).from(devices).where(eq(devices.id, deviceId)).limit(1));
          out.push(dev ? { ...dev, desiredSeq: yield* kind.desiredOf(tx, t, deviceId) } : undefined);
          yield* kind.setDesired(tx, t, deviceId, rel.seq);
          if (markRows) yield* moveMember(tx, t, { rolloutId: r.id, deviceId, from: 'waiting', to: 'desired', now, patch: { desiredAt: now.toISOString(), deadlineAt } });
        }
        return out;
      });
      await mapLimit(chunk, this.deps.concurrency ?? 16, (deviceId, k) => this.publishGiven(r, rel, deviceId, prevs[k], markRows, errors));
    }
    if (errors.length) throw new RolloutError(`${errors.length}/${ids.length} desired publishes failed`, 'conflict');
  }

  /** give()'s publish of one device; a failed one puts its row and devices.desired_seq back. */
  private async publishGiven(r: RolloutRow, rel: DeliveryItem, deviceId: string, prev: Prev | undefined, markRows: boolean, errors: unknown[]): Promise<void> {
    try {
      await rel.publish(deviceId);
    } catch (err) {
      const kind = this.of(r);
      await this.tx((tx, t) => kind.setDesired(tx, t, deviceId, prev?.desiredSeq ?? null));
      const move = (to: 'incompatible' | 'waiting', reason: string) => this.write((tx, t) => moveMember(tx, t, { rolloutId: r.id, deviceId, from: 'desired', to, now: this.now(), reason }));
      if (err instanceof AgentIncompatibleError) {
        // Its capabilities changed since the rollout was created (an older daemon came back): nothing sent.
        if (markRows) await move('incompatible', `needs ${DEVICE_CAPABILITIES.agentUpdate}`);
        this.log.warn({ rollout: r.id, deviceId }, 'rollouts/incompatible');
        return;
      }
      if (err instanceof IncompatibleReleaseError && markRows && prev && !capabilitiesKnown(prev)) {
        // Never reported a status: what it understands is unknown. It waits like any offline device
        // (times out at its deadline); its first status decides (converge).
        const at = this.now();
        await this.write(function* (tx, t) {
          yield* patchMember(tx, t, r.id, deviceId, { awaitingCapabilities: true, reason: AWAITING_REASON });
          yield* logTransition(tx, t, { rolloutId: r.id, deviceId, at, from: 'desired', to: 'desired', reason: `${AWAITING_REASON} (needs ${err.missing.join(', ')})` });
        });
        this.log.info({ rollout: r.id, deviceId, needs: err.missing }, 'rollouts/awaiting-capabilities');
        return;
      }
      if (err instanceof IncompatibleReleaseError) {
        // The trust issue's compatibility policy: nothing was sent; terminal, counts toward neither side.
        if (markRows) await move('incompatible', `needs ${err.missing.join(', ')}`);
        this.log.warn({ rollout: r.id, deviceId, missing: err.missing }, 'rollouts/incompatible');
        return;
      }
      errors.push(err);
      if (markRows) await move('waiting', 'publish failed; retried on the next tick');
      this.log.error({ err, rollout: r.id, deviceId }, 'rollouts/publish-desired-failed');
    }
  }

  /** A late or returning device converges (converge.ts). */
  converge(deviceId: string, groups?: readonly string[], cached?: { candidates: readonly RolloutRow[]; anyActive: boolean }): Promise<void> {
    return convergeDevice(this, deviceId, groups, cached);
  }

  /** Active rollouts' rows of started waves, for the engine's view of one rollout. */
  async startedMembers(r: RolloutRow): Promise<RolloutMember[]> {
    return (await this.read((tx, t) => members(tx, t, r.id))).filter((m) => m.wave <= r.wave);
  }

  /** Desired rows of a rollout, by wave ≤ `wave` (for the pause bookkeeping). */
  *desiredRows(tx: TxDb, t: Tables, r: Pick<RolloutRow, 'id' | 'wave'>) {
    const { rolloutDevices } = t;
    return yield* q(
      tx
        .select({ deviceId: rolloutDevices.deviceId, deadlineAt: rolloutDevices.deadlineAt })
        .from(rolloutDevices)
        .where(and(eq(rolloutDevices.rolloutId, r.id), eq(rolloutDevices.state, 'desired'), lte(rolloutDevices.wave, r.wave))),
    );
  }

  async gcQuietly(): Promise<void> {
    try {
      await this.deps.publisher.gcArtifacts(this.deps.registry);
    } catch (err) {
      this.log.error({ err }, 'rollouts/gc-failed');
    }
  }
}
