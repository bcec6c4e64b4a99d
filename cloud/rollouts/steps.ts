import { randomUUID } from 'node:crypto';
import { desc, eq, inArray } from 'drizzle-orm';
import type { Logger } from '../../shared/log/index.js';
import type { Registry } from '../registry/db.js';
import { devices, releases, rolloutDevices, rollouts, type DeviceRow, type ReleaseRow, type RolloutRow } from '../registry/schema.js';
import { mapLimit } from '../../shared/util/map-limit.js';
import { signedManifestOf, type ReleasePublisher } from '../fleet/publisher.js';
import { FAILED_DEVICE_STATES, RolloutError, SETTLED_DEVICE_STATES, inTarget, pickCanaries, type RolloutDeviceState, type RolloutRequestParsed, type RolloutTarget } from './policy.js';
import { activeRollouts, getRollout, members, setMember, setRollout, targetedDevices, type RolloutMember } from './store.js';

export interface RolloutStepsDeps {
  registry: Registry;
  publisher: ReleasePublisher;
  reissue(previousSeq: number): Promise<number>;
  log: Logger;
  now: () => Date;
  newId?: () => string;
  requireTelemetry?: boolean;
  concurrency?: number;
}

const INSERT_CHUNK = 500;

function telemetryOf(m: RolloutMember): { release: number | null; health: string } | undefined {
  const t = m.device.lastTelemetry as { release?: number | null; health?: string } | null;
  return t && typeof t.health === 'string' ? { release: t.release ?? null, health: t.health } : undefined;
}

/**
 * The rollout state machine: each method reads the DB, publishes, and writes the next state. Not
 * re-entrant: `RolloutEngine` runs every call through its queue.
 *
 *   pending ──(canaries given the release)──► canary ──(all settled, failures ≤ threshold, healthy
 *   for soakSeconds, telemetry evidence)──► fleet ──(every device settled)──► completed
 *   canary|fleet ──(failures > threshold)──► rolling_back ──(re-issue published)──► rolled_back
 */
export class RolloutSteps {
  private readonly log: Logger;
  private readonly now: () => Date;

  constructor(private readonly deps: RolloutStepsDeps) {
    this.log = deps.log;
    this.now = deps.now;
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
    const rel = this.release(req.releaseSeq);
    if (rel.model !== req.model) throw new RolloutError(`release ${rel.seq} is of model ${rel.model}, not ${req.model}`, 'invalid');
    const targeted = targetedDevices(this.db, req.target);
    if (!targeted.length) throw new RolloutError('no provisioned device matches the target', 'invalid');
    const id = (this.deps.newId ?? randomUUID)();
    const canaries = pickCanaries(id, targeted, req.canaryShare);
    // Before anything is stored: a missing or corrupt artifact fails the request, not a rollout.
    await this.deps.publisher.ensureChunks(this.deps.registry, rel);
    // Strictly increasing creation times: "latest rollout" must not depend on a random id tie-break.
    const last = this.db.select({ at: rollouts.createdAt }).from(rollouts).orderBy(desc(rollouts.createdAt)).limit(1).get();
    const at = new Date(Math.max(this.now().getTime(), last ? Date.parse(last.at) + 1 : 0)).toISOString();
    this.db.transaction((tx) => {
      for (const old of activeRollouts(tx).filter((r) => r.model === req.model)) {
        setRollout(tx, old.id, new Date(at), { state: 'aborted', reason: `superseded by rollout ${id}` });
        this.log.info({ rollout: old.id, by: id }, 'rollouts/superseded');
      }
      tx.insert(rollouts).values({ id, model: req.model, releaseSeq: rel.seq, target: req.target, canaryShare: req.canaryShare, soakSeconds: req.soakSeconds, failureThreshold: req.failureThreshold, state: 'pending', createdAt: at, updatedAt: at }).run();
      for (let i = 0; i < targeted.length; i += INSERT_CHUNK) {
        const rows = targeted.slice(i, i + INSERT_CHUNK).map((d) => ({ rolloutId: id, deviceId: d.id, canary: canaries.has(d.id), state: 'waiting', updatedAt: at }));
        tx.insert(rolloutDevices).values(rows).run();
      }
    });
    this.log.info({ rollout: id, model: req.model, release: rel.seq, devices: targeted.length, canaries: [...canaries] }, 'rollouts/created');
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
        const rel = this.release(r.releaseSeq);
        await this.deps.publisher.ensureChunks(this.deps.registry, rel);
        const waiting = members(this.db, id).filter((m) => m.canary && m.state === 'waiting');
        await this.give(r, rel, waiting.map((m) => m.deviceId), true);
        setRollout(this.db, id, this.now(), { state: 'canary', canaryStartedAt: this.now().toISOString() });
        this.log.info({ rollout: id, canaries: waiting.length }, 'rollouts/canary');
        return this.step(id);
      }
      case 'canary':
        return this.evalCanary(r);
      case 'fleet':
        return this.evalFleet(r);
      case 'rolling_back':
        return this.continueRollback(r);
    }
  }

  /** Status says the device runs the release: as good as an `installed` event (which may be lost, QoS 1 redelivery aside). */
  private reconcile(r: RolloutRow): RolloutMember[] {
    const ms = members(this.db, r.id);
    for (const m of ms) {
      if ((m.state === 'desired' || m.state === 'rejected') && m.device.runningSeq === r.releaseSeq) {
        setMember(this.db, r.id, m.deviceId, this.now(), 'installed');
        m.state = 'installed';
      }
    }
    return ms;
  }

  private async evalCanary(r: RolloutRow): Promise<void> {
    const all = this.reconcile(r);
    const canaries = all.filter((m) => m.canary);
    if (!canaries.length) {
      setRollout(this.db, r.id, this.now(), { state: 'aborted', reason: 'no canary left (all revoked)' });
      return;
    }
    const failed = canaries.filter((m) => FAILED_DEVICE_STATES.includes(m.state as RolloutDeviceState)).length;
    if (failed / canaries.length > r.failureThreshold) return this.fail(r, `${failed}/${canaries.length} canaries failed (threshold ${r.failureThreshold})`);
    const installed = canaries.filter((m) => m.state === 'installed');
    const settled = canaries.every((m) => SETTLED_DEVICE_STATES.includes(m.state as RolloutDeviceState));
    // Offline, or telemetry for this release that is not 'ok', restarts the soak.
    const broken = installed.some((m) => !m.device.online || (telemetryOf(m)?.release === r.releaseSeq && telemetryOf(m)?.health !== 'ok'));
    const now = this.now();
    if (!settled || !installed.length || broken) {
      if (r.canaryHealthySince) setRollout(this.db, r.id, now, { canaryHealthySince: null });
      return;
    }
    const since = r.canaryHealthySince ?? now.toISOString();
    if (!r.canaryHealthySince) setRollout(this.db, r.id, now, { canaryHealthySince: since });
    if (now.getTime() - Date.parse(since) < r.soakSeconds * 1000) return;
    const evidence = installed.every((m) => telemetryOf(m)?.release === r.releaseSeq && telemetryOf(m)?.health === 'ok');
    if ((this.deps.requireTelemetry ?? true) && !evidence) return;
    setRollout(this.db, r.id, now, { state: 'fleet' });
    this.log.info({ rollout: r.id, canaries: canaries.length, installed: installed.length }, 'rollouts/fleet');
    return this.evalFleet(this.mustGet(r.id));
  }

  private async evalFleet(r: RolloutRow): Promise<void> {
    const ms = this.reconcile(r);
    const failed = ms.filter((m) => FAILED_DEVICE_STATES.includes(m.state as RolloutDeviceState)).length;
    if (ms.length && failed / ms.length > r.failureThreshold) return this.fail(r, `${failed}/${ms.length} devices failed (threshold ${r.failureThreshold})`);
    const waiting = ms.filter((m) => m.state === 'waiting');
    if (waiting.length) await this.give(r, this.release(r.releaseSeq), waiting.map((m) => m.deviceId), true);
    // Devices that stay offline stay `desired`: the retained desired reaches them when they connect.
    if (ms.every((m) => SETTLED_DEVICE_STATES.includes(m.state as RolloutDeviceState)) && !waiting.length) {
      setRollout(this.db, r.id, this.now(), { state: 'completed', reason: failed ? `${failed} device(s) failed` : null });
      this.log.info({ rollout: r.id, devices: ms.length, failed }, 'rollouts/completed');
      await this.gcQuietly();
    }
  }

  private async fail(r: RolloutRow, reason: string): Promise<void> {
    setRollout(this.db, r.id, this.now(), { state: 'rolling_back', reason });
    this.log.warn({ rollout: r.id, release: r.releaseSeq, reason }, 'rollouts/aborted');
    await this.continueRollback(this.mustGet(r.id));
  }

  /** rolling_back → rolled_back: re-issue (once: its seq is persisted), then publish to every device given the bad release. */
  async continueRollback(r: RolloutRow): Promise<void> {
    let seq = r.rollbackSeq;
    if (seq === null) {
      const bad = this.release(r.releaseSeq);
      const prev = bad.parentSeq ?? (bad.manifest as { parent?: number | null }).parent ?? null;
      if (prev === null) {
        setRollout(this.db, r.id, this.now(), { state: 'aborted', reason: `${r.reason ?? 'rollback'}; no previous release to roll back to` });
        this.log.error({ rollout: r.id, release: r.releaseSeq }, 'rollouts/no-previous-release');
        return;
      }
      seq = await this.deps.reissue(prev);
      if (!(seq > r.releaseSeq)) throw new RolloutError(`re-issue of ${prev} got seq ${seq}, not above ${r.releaseSeq}: devices would refuse it`, 'invalid');
      setRollout(this.db, r.id, this.now(), { rollbackSeq: seq });
      this.log.info({ rollout: r.id, previous: prev, reissued: seq }, 'rollouts/reissued');
    }
    const rel = this.release(seq);
    await this.deps.publisher.ensureChunks(this.deps.registry, rel);
    // Devices still `waiting` never saw the bad release and are left alone.
    const given = members(this.db, r.id).filter((m) => m.state !== 'waiting');
    await this.give(r, rel, given.map((m) => m.deviceId), false);
    setRollout(this.db, r.id, this.now(), { state: 'rolled_back' });
    this.log.warn({ rollout: r.id, release: r.releaseSeq, rollbackSeq: seq, devices: given.length }, 'rollouts/rolled-back');
    await this.gcQuietly();
  }

  /**
   * Publishes `rel` as the retained desired of `ids`. Rows and devices.desired_seq are written
   * first, so an `installed` event racing the PUBACK finds its row; a failed publish puts the row back.
   */
  private async give(r: RolloutRow, rel: ReleaseRow, ids: string[], markRows: boolean): Promise<void> {
    const signed = signedManifestOf(rel);
    const errors: unknown[] = [];
    await mapLimit(ids, this.deps.concurrency ?? 16, async (deviceId) => {
      const now = this.now();
      const prev = this.db.select({ desiredSeq: devices.desiredSeq }).from(devices).where(eq(devices.id, deviceId)).get();
      this.db.update(devices).set({ desiredSeq: rel.seq }).where(eq(devices.id, deviceId)).run();
      if (markRows) setMember(this.db, r.id, deviceId, now, 'desired');
      try {
        await this.deps.publisher.publishDesired(deviceId, signed);
      } catch (err) {
        errors.push(err);
        this.db.update(devices).set({ desiredSeq: prev?.desiredSeq ?? null }).where(eq(devices.id, deviceId)).run();
        if (markRows) setMember(this.db, r.id, deviceId, this.now(), 'waiting');
        this.log.error({ err, rollout: r.id, deviceId }, 'rollouts/publish-desired-failed');
      }
    });
    if (errors.length) throw new RolloutError(`${errors.length}/${ids.length} desired publishes failed`, 'conflict');
  }

  /** Late and returning devices: the release of the latest rollout (fleet, completed, or its re-issue) whose target includes them. */
  async converge(deviceId: string, groups?: readonly string[]): Promise<void> {
    const dev: DeviceRow | undefined = this.db.select().from(devices).where(eq(devices.id, deviceId)).get();
    if (!dev || dev.revoked) return;
    const candidate = this.db
      .select()
      .from(rollouts)
      .where(inArray(rollouts.state, ['fleet', 'completed', 'rolled_back']))
      .orderBy(desc(rollouts.createdAt), desc(rollouts.id))
      .limit(500) // history grows; the current release of a target is among the recent ones
      .all()
      .find((r) => inTarget(r.target as RolloutTarget, { id: dev.id, groups: groups ?? dev.groups }));
    if (!candidate) return;
    const seq = candidate.state === 'rolled_back' ? candidate.rollbackSeq : candidate.releaseSeq;
    if (seq === null) return;
    const rel = this.release(seq);
    if (dev.desiredSeq !== null) {
      if (dev.desiredSeq >= seq) return;
      // A device told to run the same bytes (the release a rollback re-issued) is already there.
      const cur = this.db.select({ sha: releases.sha256 }).from(releases).where(eq(releases.seq, dev.desiredSeq)).get();
      if (cur?.sha === rel.sha256) return;
    }
    await this.deps.publisher.ensureChunks(this.deps.registry, rel);
    const inFleet = candidate.state === 'fleet';
    if (inFleet) {
      this.db.insert(rolloutDevices).values({ rolloutId: candidate.id, deviceId, canary: false, state: 'waiting', updatedAt: this.now().toISOString() }).onConflictDoNothing().run();
    }
    await this.give(candidate, rel, [deviceId], inFleet);
    this.log.info({ deviceId, rollout: candidate.id, release: seq }, 'rollouts/late-device');
  }

  async gcQuietly(): Promise<void> {
    try {
      await this.deps.publisher.gcArtifacts(this.deps.registry);
    } catch (err) {
      this.log.error({ err }, 'rollouts/gc-failed');
    }
  }
}
