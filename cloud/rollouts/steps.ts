import { randomUUID } from 'node:crypto';
import { and, desc, eq, lte } from 'drizzle-orm';
import type { Logger } from '../../shared/log/index.js';
import { mapLimit } from '../../shared/util/map-limit.js';
import { AgentIncompatibleError, IncompatibleReleaseError, type ReleasePublisher } from '../fleet/publisher.js';
import type { Registry } from '../registry/db.js';
import { agentReleases, devices, releases, rolloutDevices, rollouts, type DeviceRow, type ReleaseRow, type RolloutRow } from '../registry/schema.js';
import { agentDeliverable, agentTargets, modelDeliverable, type Deliverable, type DeliveryItem } from './deliverable.js';
import { DEVICE_CAPABILITIES } from '../../shared/protocol/compat.js';
import { RolloutError, assignWaves, inTarget, rollbackDue, wavesOf, type RolloutRequestParsed, type RolloutTarget } from './policy.js';
import { supersedeOverlap } from './supersede.js';
import { cohortSettingsOfModel, devicesOnLine, onLine, releaseCohort } from './lines.js';
import { activeRollouts, awaitingRows, convergeCandidates, countsByState, getRollout, logTransition, members, moveMember, rolloutsChanged, setRollout, targetedDevices, type RolloutMember } from './store.js';
import { noteDevices } from './notes.js';
import { WaveChecks } from './waves.js';
import { AgreementGate } from './agreement.js';

export interface RolloutStepsDeps {
  registry: Registry;
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
  private readonly log: Logger;
  private readonly now: () => Date;
  private readonly waves: WaveChecks;
  readonly agreement: AgreementGate;
  private readonly kinds: Record<'model' | 'agent', Deliverable>;

  constructor(private readonly deps: RolloutStepsDeps) {
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
    });
  }

  /** What the rollout ships: a model release or an agent release (issue 14). */
  of(r: Pick<RolloutRow, 'kind'>): Deliverable {
    return this.kinds[r.kind];
  }

  private get db() {
    return this.deps.registry.db;
  }

  mustGet(id: string): RolloutRow {
    const r = getRollout(this.db, id);
    if (!r) throw new RolloutError(`rollout ${id} not found`, 'not_found');
    return r;
  }

  release(seq: number): ReleaseRow {
    const rel = this.db.select().from(releases).where(eq(releases.seq, seq)).get();
    if (!rel) throw new RolloutError(`release ${seq} not found`, 'not_found');
    return rel;
  }

  async create(req: RolloutRequestParsed): Promise<RolloutRow> {
    const kind = req.kind;
    let skipped: { id: string; reason: string }[] = [];
    let targeted = targetedDevices(this.db, req.target);
    /** The release line (issue 13): null = the base line; agent releases have one line per platform. */
    let lineCohort: string | null = null;
    if (kind === 'model') {
      const rel = this.release(req.releaseSeq);
      if (rel.model !== req.model) throw new RolloutError(`release ${rel.seq} is of model ${rel.model}, not ${req.model}`, 'invalid');
      lineCohort = rel.cohort;
      // Issue 13: only the devices of the release's line (cohort members get their cohort's releases, never the base's).
      const inTargetAll = targeted;
      targeted = devicesOnLine(this.db, req.model, rel.seq, inTargetAll);
      if (!targeted.length && inTargetAll.length) {
        throw new RolloutError(`no provisioned device matches the target on the release's line (${rel.cohort === null ? 'base: every targeted device is in a cohort' : `cohort ${rel.cohort}`})`, 'invalid');
      }
    } else {
      const rel = this.db.select().from(agentReleases).where(eq(agentReleases.agentSeq, req.releaseSeq)).get();
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
    await this.of({ kind }).item(req.releaseSeq).ensure();
    // Strictly increasing creation times: "latest rollout" must not depend on a random id tie-break.
    const last = this.db.select({ at: rollouts.createdAt }).from(rollouts).orderBy(desc(rollouts.createdAt)).limit(1).get();
    const atDate = new Date(Math.max(this.now().getTime(), last ? Date.parse(last.at) + 1 : 0));
    const at = atDate.toISOString();
    this.db.transaction((tx) => {
      const ids = new Set(targeted.map((d) => d.id));
      // Superseding is per release line (model, cohort).
      const sameLine = (r: RolloutRow) => r.model === req.model && r.kind === kind && r.state !== 'rolling_back' && (kind === 'agent' || releaseCohort(tx, r.releaseSeq) === lineCohort);
      for (const old of activeRollouts(tx).filter(sameLine)) supersedeOverlap(tx, old, id, ids, atDate, this.log);
      const { minFailures, failureThreshold, soakSeconds, deviceTimeoutSeconds, canaryGraceSeconds, agreementMargin } = req;
      tx.insert(rollouts)
        .values({ id, model: req.model, kind, releaseSeq: req.releaseSeq, target: req.target, canaryShare: waves[0]!, waves, soakSeconds, failureThreshold, minFailures, deviceTimeoutSeconds, canaryGraceSeconds, agreementMargin, state: 'pending', createdAt: at, updatedAt: at })
        .run();
      rolloutsChanged();
      logTransition(tx, { rolloutId: id, at: atDate, from: null, to: 'pending', reason: `${kind === 'agent' ? 'agent release' : 'release'} ${req.releaseSeq} to ${targeted.length} device(s) in waves ${JSON.stringify(waves)}${skipped.length ? `; ${skipped.length} incompatible` : ''}` });
      for (let i = 0; i < targeted.length; i += INSERT_CHUNK) {
        const rows = targeted.slice(i, i + INSERT_CHUNK).map((d) => {
          const wave = assigned.get(d.id)!;
          return { rolloutId: id, deviceId: d.id, canary: wave === 0, wave, state: 'waiting', updatedAt: at };
        });
        tx.insert(rolloutDevices).values(rows).run();
      }
      for (let i = 0; i < skipped.length; i += INSERT_CHUNK) {
        const rows = skipped.slice(i, i + INSERT_CHUNK).map((d) => ({ rolloutId: id, deviceId: d.id, canary: false, wave: waves.length - 1, state: 'incompatible', reason: d.reason, updatedAt: at }));
        tx.insert(rolloutDevices).values(rows).run();
        for (const d of skipped.slice(i, i + INSERT_CHUNK)) logTransition(tx, { rolloutId: id, deviceId: d.id, at: atDate, from: null, to: 'incompatible', reason: d.reason });
      }
    });
    this.log.info({ rollout: id, model: req.model, kind, release: req.releaseSeq, devices: targeted.length, incompatible: skipped.length, waves }, 'rollouts/created');
    await this.step(id);
    return this.mustGet(id);
  }

  async evaluateAll(): Promise<void> {
    for (const r of activeRollouts(this.db)) {
      try {
        await this.step(r.id);
      } catch (err) {
        this.log.error({ err, rollout: r.id, state: r.state }, 'rollouts/step-failed');
      }
    }
  }

  private async step(id: string): Promise<void> {
    const r = this.mustGet(id);
    switch (r.state) {
      case 'pending': {
        if (r.pausedAt) return;
        await this.of(r).item(r.releaseSeq).ensure();
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
    this.waves.reconcile(r);
    // Failures are acted on even while paused: quarantine and rollback protect devices.
    const counts = countsByState(this.db, r.id, r.wave);
    if (counts.failed > 0) {
      if (rollbackDue(counts, r)) {
        const bad = counts.failed + counts.quarantined;
        return this.fail(r, `${bad} failed of ${counts.installed + bad} settled in waves 1..${r.wave + 1} (threshold: max(${r.minFailures}, ${r.failureThreshold} × settled))`);
      }
      await this.waves.quarantineFailed(r);
    }
    if (r.pausedAt) return;
    this.waves.timeouts(r);
    await this.waves.giveWaiting(r);
    if (await this.waves.replaceOffline(r)) return;
    const w = wavesOf(r);
    const all = countsByState(this.db, r.id);
    if (r.wave >= w.length - 1) {
      // Failures that arrived while this evaluation awaited a publish are judged first (next evaluation).
      if (all.waiting + all.desired + all.failed > 0) return;
      const total = Object.values(all).reduce((a, b) => a + b, 0);
      const state = all.superseded === total ? 'superseded' : 'completed';
      const summary = Object.entries(all).filter(([, n]) => n > 0).map(([s, n]) => `${n} ${s}`).join(', ');
      setRollout(this.db, r.id, this.now(), { state, reason: summary });
      this.log.info({ rollout: r.id, counts: all }, `rollouts/${state}`);
      await this.gcQuietly();
      return;
    }
    if (await this.waves.wavePassed(r)) await this.waves.startWave(this.mustGet(r.id), r.wave + 1);
  }

  private async fail(r: RolloutRow, reason: string): Promise<void> {
    setRollout(this.db, r.id, this.now(), { state: 'rolling_back', reason });
    this.log.warn({ rollout: r.id, release: r.releaseSeq, reason }, 'rollouts/rolling-back');
    await this.continueRollback(this.mustGet(r.id));
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
    setRollout(this.db, r.id, this.now(), { quarantineSeqs: known });
    r.quarantineSeqs = known;
    this.log.info({ rollout: r.id, previous: prev, reissued: seq }, 'rollouts/reissued');
    return seq;
  }

  /** rolling_back → rolled_back: re-issue (once: its seq is persisted), then publish to every device given the bad release. */
  async continueRollback(r: RolloutRow): Promise<void> {
    let seq = r.rollbackSeq;
    if (seq === null) {
      const prev = this.of(r).item(r.releaseSeq).parent;
      if (prev === null) {
        setRollout(this.db, r.id, this.now(), { state: 'aborted', reason: `${r.reason ?? 'rollback'}; no previous release to roll back to` });
        this.log.error({ rollout: r.id, release: r.releaseSeq }, 'rollouts/no-previous-release');
        return;
      }
      seq = await this.reissueAbove(r, prev, r.releaseSeq);
      setRollout(this.db, r.id, this.now(), { rollbackSeq: seq });
    }
    const rel = this.of(r).item(seq);
    await rel.ensure();
    // Devices still `waiting` never saw the bad release; superseded ones belong to a newer rollout.
    const given = members(this.db, r.id).filter((m) => m.state !== 'waiting' && m.state !== 'superseded');
    await this.give(r, rel, given.map((m) => m.deviceId), false);
    this.db.transaction((tx) => {
      setRollout(tx, r.id, this.now(), { state: 'rolled_back' });
      noteDevices(tx, { rolloutId: r.id, deviceIds: given.map((m) => m.deviceId), to: 'rolled_back', at: this.now(), reason: r.reason, release: seq });
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
      const prevs = this.db.transaction((tx) =>
        chunk.map((deviceId) => {
          const dev = tx.select({ lastSeen: devices.lastSeen, online: devices.online, protocolVersion: devices.protocolVersion, capabilities: devices.capabilities }).from(devices).where(eq(devices.id, deviceId)).get();
          const prev = dev ? { ...dev, desiredSeq: kind.desiredOf(tx, deviceId) } : undefined;
          kind.setDesired(tx, deviceId, rel.seq);
          if (markRows) moveMember(tx, { rolloutId: r.id, deviceId, from: 'waiting', to: 'desired', now, patch: { desiredAt: now.toISOString(), deadlineAt } });
          return prev;
        }),
      );
      await mapLimit(chunk, this.deps.concurrency ?? 16, (deviceId, k) => this.publishGiven(r, rel, deviceId, prevs[k], markRows, errors));
    }
    if (errors.length) throw new RolloutError(`${errors.length}/${ids.length} desired publishes failed`, 'conflict');
  }

  /** give()'s publish of one device; a failed one puts its row and devices.desired_seq back. */
  private async publishGiven(r: RolloutRow, rel: DeliveryItem, deviceId: string, prev: Pick<DeviceRow, 'desiredSeq' | 'lastSeen' | 'online' | 'protocolVersion' | 'capabilities'> | undefined, markRows: boolean, errors: unknown[]): Promise<void> {
    try {
      await rel.publish(deviceId);
    } catch (err) {
      this.of(r).setDesired(this.db, deviceId, prev?.desiredSeq ?? null);
      if (err instanceof AgentIncompatibleError) {
        // Its capabilities changed since the rollout was created (an older daemon came back): nothing sent.
        if (markRows) moveMember(this.db, { rolloutId: r.id, deviceId, from: 'desired', to: 'incompatible', now: this.now(), reason: `needs ${DEVICE_CAPABILITIES.agentUpdate}` });
        this.log.warn({ rollout: r.id, deviceId }, 'rollouts/incompatible');
        return;
      }
      if (err instanceof IncompatibleReleaseError && markRows && prev && !capabilitiesKnown(prev)) {
        // Never reported a status: what it understands is unknown. It waits like any offline device
        // (times out at its deadline); its first status decides (converge).
        this.db.update(rolloutDevices).set({ awaitingCapabilities: true, reason: AWAITING_REASON }).where(and(eq(rolloutDevices.rolloutId, r.id), eq(rolloutDevices.deviceId, deviceId))).run();
        logTransition(this.db, { rolloutId: r.id, deviceId, at: this.now(), from: 'desired', to: 'desired', reason: `${AWAITING_REASON} (needs ${err.missing.join(', ')})` });
        this.log.info({ rollout: r.id, deviceId, needs: err.missing }, 'rollouts/awaiting-capabilities');
        return;
      }
      if (err instanceof IncompatibleReleaseError) {
        // The trust issue's compatibility policy: nothing was sent; terminal, counts toward neither side.
        if (markRows) moveMember(this.db, { rolloutId: r.id, deviceId, from: 'desired', to: 'incompatible', now: this.now(), reason: `needs ${err.missing.join(', ')}` });
        this.log.warn({ rollout: r.id, deviceId, missing: err.missing }, 'rollouts/incompatible');
        return;
      }
      errors.push(err);
      if (markRows) moveMember(this.db, { rolloutId: r.id, deviceId, from: 'desired', to: 'waiting', now: this.now(), reason: 'publish failed; retried on the next tick' });
      this.log.error({ err, rollout: r.id, deviceId }, 'rollouts/publish-desired-failed');
    }
  }

  /**
   * Late and returning devices: the release of the latest rollout (fleet, completed, or its re-issue)
   * whose target includes them; and a device that reports its first status gets what active rollouts
   * held back until its capabilities were known. `candidates` (convergeCandidates) and `anyActive` come
   * from the engine's cache; without them they are read here.
   */
  async converge(deviceId: string, groups?: readonly string[], cached?: { candidates: readonly RolloutRow[]; anyActive: boolean }): Promise<void> {
    const dev: DeviceRow | undefined = this.db.select().from(devices).where(eq(devices.id, deviceId)).get();
    if (!dev || dev.revoked) return;
    const sent = (cached?.anyActive ?? true) && capabilitiesKnown(dev) ? await this.deliverAwaiting(dev) : false;
    const asNow = { id: dev.id, groups: groups ?? dev.groups };
    // Issue 13: only a rollout of the device's own release line.
    const candidate = (cached?.candidates ?? convergeCandidates(this.db)).find((r) => inTarget(r.target as RolloutTarget, asNow) && onLine(cohortSettingsOfModel(this.db, r.model), asNow, releaseCohort(this.db, r.releaseSeq)));
    if (!candidate) return;
    const seq = candidate.state === 'rolled_back' ? candidate.rollbackSeq : candidate.releaseSeq;
    if (seq === null) return;
    const desiredSeq = sent ? (this.db.select({ desiredSeq: devices.desiredSeq }).from(devices).where(eq(devices.id, deviceId)).get()?.desiredSeq ?? null) : dev.desiredSeq;
    if (desiredSeq !== null && desiredSeq >= seq) return;
    const rel = this.release(seq);
    if (desiredSeq !== null) {
      // A device told to run the same bytes (the release a rollback re-issued) is already there.
      const cur = this.db.select({ sha: releases.sha256 }).from(releases).where(eq(releases.seq, desiredSeq)).get();
      if (cur?.sha === rel.sha256) return;
    }
    const inFleet = candidate.state === 'fleet';
    if (inFleet) {
      const inserted = this.db
        .insert(rolloutDevices)
        .values({ rolloutId: candidate.id, deviceId, canary: false, wave: candidate.wave, state: 'waiting', updatedAt: this.now().toISOString() })
        .onConflictDoNothing()
        .run();
      if (inserted.changes) logTransition(this.db, { rolloutId: candidate.id, deviceId, at: this.now(), from: null, to: 'waiting', reason: 'joined late' });
      const row = this.db.select({ state: rolloutDevices.state }).from(rolloutDevices).where(and(eq(rolloutDevices.rolloutId, candidate.id), eq(rolloutDevices.deviceId, deviceId))).get();
      // A paused rollout gives it the release on resume; a device already settled in it keeps its state.
      // (The cache may hold an older copy of the rollout: its pause is read again.)
      if (row?.state !== 'waiting' || this.mustGet(candidate.id).pausedAt) return;
      // The agreement gate: a device the release is worse for stays on its own (held_back).
      if (!(await this.agreement.screen(candidate, [deviceId])).length) return;
    } else if (await this.agreement.holdsLate(candidate, deviceId, dev.runningSeq)) {
      return;
    }
    const item = this.of(candidate).item(seq);
    await item.ensure();
    await this.give(candidate, item, [deviceId], inFleet);
    this.log.info({ deviceId, rollout: candidate.id, release: seq }, 'rollouts/late-device');
  }

  /**
   * The device reported its capabilities: rows of active rollouts that held the release back for them
   * are decided now. A `desired` row gets the release sent, or becomes `incompatible`; a row that timed
   * out meanwhile gets it sent when compatible (a late install is recorded) and otherwise stays. Returns
   * whether anything was sent.
   */
  private async deliverAwaiting(dev: DeviceRow): Promise<boolean> {
    let sent = false;
    for (const row of awaitingRows(this.db, dev.id)) {
      const r = this.mustGet(row.rolloutId);
      const now = this.now();
      const where = and(eq(rolloutDevices.rolloutId, r.id), eq(rolloutDevices.deviceId, dev.id));
      this.db.update(rolloutDevices).set({ awaitingCapabilities: false, updatedAt: now.toISOString() }).where(where).run();
      if (row.state !== 'desired' && row.state !== 'timed_out') continue;
      const rel = this.of(r).item(r.releaseSeq);
      try {
        await rel.ensure();
        await rel.publish(dev.id);
      } catch (err) {
        if (!(err instanceof IncompatibleReleaseError)) {
          // Not decided: try again on its next status.
          this.db.update(rolloutDevices).set({ awaitingCapabilities: true }).where(where).run();
          throw err;
        }
        if (row.state === 'desired') moveMember(this.db, { rolloutId: r.id, deviceId: dev.id, from: 'desired', to: 'incompatible', now, reason: `needs ${err.missing.join(', ')}` });
        else logTransition(this.db, { rolloutId: r.id, deviceId: dev.id, at: now, from: row.state, to: row.state, reason: `capabilities reported: needs ${err.missing.join(', ')}; nothing sent` });
        this.log.warn({ rollout: r.id, deviceId: dev.id, missing: err.missing }, 'rollouts/incompatible');
        continue;
      }
      this.of(r).setDesired(this.db, dev.id, rel.seq);
      this.db.update(rolloutDevices).set({ reason: 'capabilities reported: release sent' }).where(where).run();
      logTransition(this.db, { rolloutId: r.id, deviceId: dev.id, at: now, from: row.state, to: row.state, reason: 'capabilities reported: release sent' });
      this.log.info({ rollout: r.id, deviceId: dev.id, release: rel.seq }, 'rollouts/awaiting-delivered');
      sent = true;
    }
    return sent;
  }

  /** Active rollouts' rows of started waves, for the engine's view of one rollout. */
  startedMembers(r: RolloutRow): RolloutMember[] {
    return members(this.db, r.id).filter((m) => m.wave <= r.wave);
  }

  /** Desired rows of a rollout, by wave ≤ `wave` (for the pause bookkeeping). */
  desiredRows(r: RolloutRow): { deviceId: string; deadlineAt: string | null }[] {
    return this.db
      .select({ deviceId: rolloutDevices.deviceId, deadlineAt: rolloutDevices.deadlineAt })
      .from(rolloutDevices)
      .where(and(eq(rolloutDevices.rolloutId, r.id), eq(rolloutDevices.state, 'desired'), lte(rolloutDevices.wave, r.wave)))
      .all();
  }

  async gcQuietly(): Promise<void> {
    try {
      await this.deps.publisher.gcArtifacts(this.deps.registry);
    } catch (err) {
      this.log.error({ err }, 'rollouts/gc-failed');
    }
  }
}
