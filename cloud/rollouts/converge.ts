import { and, eq } from 'drizzle-orm';
import { IncompatibleReleaseError } from '../fleet/publisher.js';
import type { DeviceRow, RolloutRow } from '../registry/schema.js';
import { q } from '../registry/tx.js';
import { inTarget, type RolloutTarget } from './policy.js';
import { cohortSettingsOfModel, onLine, releaseCohort } from './lines.js';
import { awaitingRows, convergeCandidates, logTransition, moveMember, patchMember } from './store.js';
import { capabilitiesKnown, type RolloutSteps } from './steps.js';

/**
 * Late and returning devices of model rollouts (split out of steps.ts): a device converges to the release
 * of the latest rollout of its line whose target includes it, and a device that reports its first status
 * gets what active rollouts held back until its capabilities were known. Runs in the engine's queue.
 */

/**
 * Late and returning devices: the release of the latest rollout (fleet, completed, or its re-issue)
 * whose target includes them; and a device that reports its first status gets what active rollouts
 * held back until its capabilities were known. `candidates` (convergeCandidates) and `anyActive` come
 * from the engine's cache; without them they are read here.
 */
export async function convergeDevice(s: RolloutSteps, deviceId: string, groups?: readonly string[], cached?: { candidates: readonly RolloutRow[]; anyActive: boolean }): Promise<void> {
  const reg = s.deps.registry;
  const { devices, releases } = reg.t;
  const [dev]: DeviceRow[] = await reg.q.select().from(devices).where(eq(devices.id, deviceId)).limit(1);
  if (!dev || dev.revoked) return;
  const sent = (cached?.anyActive ?? true) && capabilitiesKnown(dev) ? await deliverAwaiting(s, dev) : false;
  const asNow = { id: dev.id, groups: groups ?? dev.groups };
  // Issue 13: only a rollout of the device's own release line.
  const candidates = cached?.candidates ?? (await s.read((tx, t) => convergeCandidates(tx, t)));
  let candidate: RolloutRow | undefined;
  for (const r of candidates) {
    if (!inTarget(r.target as RolloutTarget, asNow)) continue;
    const [cs, cohort] = await s.read(function* (tx, t) {
      return [yield* cohortSettingsOfModel(tx, t, r.model), yield* releaseCohort(tx, t, r.releaseSeq)] as const;
    });
    if (onLine(cs, asNow, cohort)) {
      candidate = r;
      break;
    }
  }
  if (!candidate) return;
  const seq = candidate.state === 'rolled_back' ? candidate.rollbackSeq : candidate.releaseSeq;
  if (seq === null) return;
  const desiredSeq = sent ? ((await reg.q.select({ desiredSeq: devices.desiredSeq }).from(devices).where(eq(devices.id, deviceId)).limit(1))[0]?.desiredSeq ?? null) : dev.desiredSeq;
  if (desiredSeq !== null && desiredSeq >= seq) return;
  const rel = await s.release(seq);
  if (desiredSeq !== null) {
    // A device told to run the same bytes (the release a rollback re-issued) is already there.
    const [cur] = await reg.q.select({ sha: releases.sha256 }).from(releases).where(eq(releases.seq, desiredSeq)).limit(1);
    if (cur?.sha === rel.sha256) return;
  }
  const inFleet = candidate.state === 'fleet';
  if (inFleet) {
    const now = s.now();
    const c = candidate;
    const row = await s.write(function* (tx, t) {
      const inserted = yield* q(
        tx
          .insert(t.rolloutDevices)
          .values({ rolloutId: c.id, deviceId, canary: false, wave: c.wave, state: 'waiting', updatedAt: now.toISOString() })
          .onConflictDoNothing()
          .returning({ deviceId: t.rolloutDevices.deviceId }),
      );
      if (inserted.length) yield* logTransition(tx, t, { rolloutId: c.id, deviceId, at: now, from: null, to: 'waiting', reason: 'joined late' });
      const [r] = yield* q(tx.select({ state: t.rolloutDevices.state }).from(t.rolloutDevices).where(and(eq(t.rolloutDevices.rolloutId, c.id), eq(t.rolloutDevices.deviceId, deviceId))).limit(1));
      return r;
    });
    // A paused rollout gives it the release on resume; a device already settled in it keeps its state.
    // (The cache may hold an older copy of the rollout: its pause is read again.)
    if (row?.state !== 'waiting' || (await s.mustGet(candidate.id)).pausedAt) return;
    // The agreement gate: a device the release is worse for stays on its own (held_back).
    if (!(await s.agreement.screen(candidate, [deviceId])).length) return;
  } else if (await s.agreement.holdsLate(candidate, deviceId, dev.runningSeq)) {
    return;
  }
  const item = await s.of(candidate).item(seq);
  await item.ensure();
  await s.give(candidate, item, [deviceId], inFleet);
  s.log.info({ deviceId, rollout: candidate.id, release: seq }, 'rollouts/late-device');
}

/**
 * The device reported its capabilities: rows of active rollouts that held the release back for them
 * are decided now. A `desired` row gets the release sent, or becomes `incompatible`; a row that timed
 * out meanwhile gets it sent when compatible (a late install is recorded) and otherwise stays. Returns
 * whether anything was sent.
 */
async function deliverAwaiting(s: RolloutSteps, dev: DeviceRow): Promise<boolean> {
  let sent = false;
  for (const row of await s.read((tx, t) => awaitingRows(tx, t, dev.id))) {
    const r = await s.mustGet(row.rolloutId);
    const now = s.now();
    await s.tx((tx, t) => patchMember(tx, t, r.id, dev.id, { awaitingCapabilities: false, updatedAt: now.toISOString() }));
    if (row.state !== 'desired' && row.state !== 'timed_out') continue;
    const kind = s.of(r);
    const rel = await kind.item(r.releaseSeq);
    try {
      await rel.ensure();
      await rel.publish(dev.id);
    } catch (err) {
      if (!(err instanceof IncompatibleReleaseError)) {
        // Not decided: try again on its next status.
        await s.tx((tx, t) => patchMember(tx, t, r.id, dev.id, { awaitingCapabilities: true }));
        throw err;
      }
      const needs = `needs ${err.missing.join(', ')}`;
      await s.write(function* (tx, t) {
        if (row.state === 'desired') yield* moveMember(tx, t, { rolloutId: r.id, deviceId: dev.id, from: 'desired', to: 'incompatible', now, reason: needs });
        else yield* logTransition(tx, t, { rolloutId: r.id, deviceId: dev.id, at: now, from: row.state, to: row.state, reason: `capabilities reported: ${needs}; nothing sent` });
      });
      s.log.warn({ rollout: r.id, deviceId: dev.id, missing: err.missing }, 'rollouts/incompatible');
      continue;
    }
    await s.write(function* (tx, t) {
      yield* kind.setDesired(tx, t, dev.id, rel.seq);
      yield* patchMember(tx, t, r.id, dev.id, { reason: 'capabilities reported: release sent' });
      yield* logTransition(tx, t, { rolloutId: r.id, deviceId: dev.id, at: now, from: row.state, to: row.state, reason: 'capabilities reported: release sent' });
    });
    s.log.info({ rollout: r.id, deviceId: dev.id, release: rel.seq }, 'rollouts/awaiting-delivered');
    sent = true;
  }
  return sent;
}
