import type { Logger } from '../../shared/log/index.js';
import { verifyManifest, type TrustedKey } from '../../shared/manifest/index.js';
import { manifestSchema, type Manifest } from '../../shared/protocol/index.js';
import { deviceEvent, emitSafely, type EventContext } from './events.js';
import type { SlotStore } from './slots.js';
import type { UpdateStateStore } from './state.js';
import { keysOf, type ModelHost, type RestoreOutcome, type RollbackOutcome, type RollbackReason, type RunningModel, type SlotRecord, type TrustedKeysSource } from './types.js';

/**
 * Getting back to a known-good model: at startup (restore the persisted slots) and after a bad
 * switch (rollback to the previous slot). The manager runs these under its install lock.
 */

export interface RecoveryDeps {
  state: UpdateStateStore;
  slots: SlotStore;
  host: ModelHost;
  trustedKeys: TrustedKeysSource;
  /** Key ids the accepted key set revokes: their slots are served (degraded) only when nothing else is. */
  revokedKeys?: () => Iterable<string>;
  ctx: EventContext;
  log: Logger;
}

/** Parses a slot's stored manifest (local data that verified when it was stored). */
export function manifestOf(slot: SlotRecord | null): Manifest | null {
  const r = slot ? manifestSchema.safeParse(slot.signed.manifest) : undefined;
  return r?.success ? r.data : null;
}

/** Starts that find the same release still on trial before it is deny-listed (issue 10, crash-loop guard). */
export const MAX_TRIAL_CRASHES = 2;

/**
 * Before restoring: a release found still on trial (switched to, or being loaded, and not through its
 * health window) crashed the daemon. Counts it; at {@link MAX_TRIAL_CRASHES} deny-lists it on disk,
 * makes the previous slot current when it was current, and reports `rolled_back` (`crash_loop`).
 */
export async function countTrialCrash(d: RecoveryDeps): Promise<{ crashes: number; denied: boolean } | null> {
  const s = d.state.get();
  const t = s.trial;
  if (!t) return null;
  const crashes = t.crashes + 1;
  if (crashes < MAX_TRIAL_CRASHES) {
    await d.state.save({ ...s, trial: { ...t, crashes } });
    d.log.warn({ sha256: t.sha256, release: t.release, crashes }, 'updates/trial-crashed: trying it once more');
    return { crashes, denied: false };
  }
  const wasCurrent = s.current?.sha256 === t.sha256;
  const prev = s.previous && s.previous.sha256 !== t.sha256 ? s.previous : null;
  await d.state.save({ ...s, denied: [...s.denied, t.sha256], trial: null, ...(wasCurrent ? { current: prev, previous: null } : {}) });
  const detail = `release ${t.release} was found uncommitted at ${crashes} starts (it crashed the daemon while loading or serving); deny-listed, ${
    wasCurrent ? (prev ? 'serving the previous slot' : 'no previous slot to serve') : 'still serving the current slot'
  }`;
  d.log.error({ sha256: t.sha256, release: t.release, crashes }, 'updates/crash-loop');
  emitSafely(d.ctx, {
    ...deviceEvent(d.ctx, 'rolled_back', null, { reason: 'crash_loop', detail, sha256: t.sha256 }),
    model: t.model,
    release: t.release,
  });
  return { crashes, denied: true };
}

/**
 * Activates the persisted current slot, else the previous one. Each is re-verified first: the
 * signature (a key removed from the trust list also stops old models) and the file's hash (a
 * truncated or corrupt slot is discarded).
 */
export async function restoreSlots(d: RecoveryDeps): Promise<{ outcome: RestoreOutcome; running: RunningModel | null; degraded?: string }> {
  const first = await restoreTrusted(d);
  if (first.running) return first;
  // No slot is signed by a live key (its key was revoked): keep serving the current model, degraded,
  // until a re-signed release arrives (issue 10, "Revocation"), rather than serve nothing.
  const s = d.state.get();
  const revoked = new Set(d.revokedKeys?.() ?? []);
  for (const slot of [s.current, s.previous]) {
    const m = manifestOf(slot);
    // Only a revoked key's slot: a key merely absent from the trust list (edge.json edited) stops its models.
    if (!slot || !m || !revoked.has(slot.signed.signature.keyId) || d.state.isDenied(slot.sha256) || m.artifact.sha256 !== slot.sha256 || !(await d.slots.verify(m.artifact))) continue;
    try {
      await d.host.activate(d.slots.pathOf(slot.sha256), m);
    } catch (err) {
      d.log.warn({ sha256: slot.sha256, err }, 'updates/restore-activate-failed');
      continue;
    }
    d.log.error({ release: m.release, keyId: slot.signed.signature.keyId }, 'updates/serving-untrusted-slot: no slot is signed by a live key; degraded until a re-signed release arrives');
    return { outcome: { status: 'restored', from: slot === s.current ? 'current' : 'previous', release: m.release, sha256: slot.sha256 }, running: { model: m.model, release: m.release, sha256: slot.sha256 }, degraded: 'revoked_key' };
  }
  return first;
}

async function restoreTrusted(d: RecoveryDeps): Promise<{ outcome: RestoreOutcome; running: RunningModel | null }> {
  const s = d.state.get();
  for (const from of ['current', 'previous'] as const) {
    const slot = s[from];
    if (!slot || d.state.isDenied(slot.sha256)) continue;
    const v = verifyManifest(slot.signed, keysOf(d.trustedKeys));
    if (!v.ok || v.manifest.artifact.sha256 !== slot.sha256) {
      d.log.warn({ from, sha256: slot.sha256, reason: v.ok ? 'sha_mismatch' : v.reason }, 'updates/restore-untrusted-slot');
      continue;
    }
    const m = v.manifest;
    if (!(await d.slots.verify(m.artifact))) continue;
    try {
      await d.host.activate(d.slots.pathOf(slot.sha256), m);
    } catch (err) {
      d.log.warn({ from, sha256: slot.sha256, err }, 'updates/restore-activate-failed');
      continue;
    }
    if (from === 'previous') await d.state.save({ ...s, current: slot, previous: null });
    const now = d.state.get();
    await d.slots.prune([now.current?.sha256, now.previous?.sha256]);
    d.log.info({ from, release: m.release, sha256: slot.sha256 }, 'updates/restored');
    return { outcome: { status: 'restored', from, release: m.release, sha256: slot.sha256 }, running: { model: m.model, release: m.release, sha256: slot.sha256 } };
  }
  if (s.current || s.previous) d.log.error({ current: s.current?.sha256, previous: s.previous?.sha256 }, 'updates/restore-nothing-usable');
  return { outcome: { status: 'none' }, running: null };
}

/**
 * Deny-lists `sha256` and, when it is the current slot, switches back to the previous slot and
 * reports `rolled_back`. The release floor stays where it is: the cloud re-issues an older model
 * under a new sequence (`lineage.reissueOf`) if it wants it back everywhere.
 */
export async function rollbackSlot(d: RecoveryDeps, reason: RollbackReason, sha256: string): Promise<{ outcome: RollbackOutcome; running?: RunningModel }> {
  const s = d.state.get();
  const denied = [...s.denied, sha256];
  const bad = s.current?.sha256 === sha256 ? manifestOf(s.current) : null;
  if (!bad) {
    await d.state.save({ ...s, denied });
    return { outcome: { status: 'not_current', detail: `${sha256} is not the current slot; deny-listed only` } };
  }
  const prev = s.previous;
  const pm = manifestOf(prev);
  let problem: Extract<RollbackOutcome, { detail: string }> | undefined;
  if (!prev || !pm || prev.sha256 === sha256 || d.state.isDenied(prev.sha256) || !(await d.slots.verify(pm.artifact))) {
    problem = { status: 'no_previous', detail: 'no usable previous release is kept; still serving the deny-listed model' };
  } else {
    try {
      await d.host.activate(d.slots.pathOf(prev.sha256), pm);
    } catch (err) {
      problem = { status: 'previous_failed', detail: `previous release ${pm.release} failed to load: ${(err as Error)?.message ?? String(err)}` };
    }
  }
  if (problem || !prev || !pm) {
    const p = problem ?? { status: 'no_previous' as const, detail: 'no previous release' };
    await d.state.save({ ...s, denied, trial: s.trial?.sha256 === sha256 ? null : s.trial });
    emitSafely(d.ctx, deviceEvent(d.ctx, 'rolled_back', bad, { reason, detail: p.detail }));
    d.log.error({ sha256, reason, ...p }, 'updates/rollback-incomplete');
    return { outcome: p };
  }
  await d.state.save({ ...s, denied, current: prev, previous: null, trial: s.trial?.sha256 === sha256 ? null : s.trial });
  await d.slots.prune([prev.sha256]);
  emitSafely(d.ctx, deviceEvent(d.ctx, 'rolled_back', bad, { reason, detail: `now serving release ${pm.release} (${prev.sha256.slice(0, 12)})` }));
  d.log.warn({ sha256, reason, to: pm.release }, 'updates/rolled-back');
  return { outcome: { status: 'rolled_back', to: { release: pm.release, sha256: prev.sha256 } }, running: { model: pm.model, release: pm.release, sha256: prev.sha256 } };
}

/**
 * After a key set change (issue 10, "Revocation"). Resets the release floor when every key behind it
 * was revoked: to the highest release accepted from a key still live, never to 0 (no live key has
 * one: the floor stays). Then checks the current slot: signed by a key no longer trusted, it falls
 * back to the previous slot when a live key signed that one, else keeps serving, degraded.
 */
export async function applyRevocations(d: RecoveryDeps, revoked: ReadonlySet<string>): Promise<{ running?: RunningModel; degraded: string | null; floor?: { from: number; to: number } }> {
  let s = d.state.get();
  let floor: { from: number; to: number } | undefined;
  const behind = Object.entries(s.keyFloors).filter(([, seq]) => seq === s.highestRelease).map(([k]) => k);
  if (behind.length > 0 && behind.every((k) => revoked.has(k))) {
    const live = Object.entries(s.keyFloors).filter(([k]) => !revoked.has(k)).map(([, seq]) => seq);
    const to = live.length ? Math.max(...live) : 0;
    if (to > 0 && to < s.highestRelease) {
      floor = { from: s.highestRelease, to };
      await d.state.save({ ...s, highestRelease: to }, { lowerFloor: `keys ${behind.join(', ')} revoked` });
      d.log.warn({ ...floor, revoked: behind }, 'updates/floor-reset: the keys behind the release floor were revoked');
      s = d.state.get();
    } else if (to === 0) {
      d.log.error({ floor: s.highestRelease, revoked: behind }, 'updates/floor-kept: no live key has an accepted release to reset the floor to');
    }
  }
  // Only a revocation moves the device off what it serves; a key merely retired from the set does not.
  const trusted = (slot: SlotRecord | null): boolean => !!slot && !revoked.has(slot.signed.signature.keyId);
  if (!s.current || trusted(s.current)) return { degraded: null, floor };
  const pm = manifestOf(s.previous);
  if (s.previous && pm && trusted(s.previous) && verifyManifest(s.previous.signed, keysOf(d.trustedKeys)).ok && !d.state.isDenied(s.previous.sha256) && (await d.slots.verify(pm.artifact))) {
    try {
      await d.host.activate(d.slots.pathOf(s.previous.sha256), pm);
      await d.state.save({ ...s, current: s.previous, previous: null, trial: null });
      d.log.warn({ to: pm.release, revokedKey: s.current.signed.signature.keyId }, 'updates/revoked-current: serving the previous release, signed by a live key');
      return { running: { model: pm.model, release: pm.release, sha256: s.previous.sha256 }, degraded: null, floor };
    } catch (err) {
      d.log.error({ err }, 'updates/revoked-current: the previous release failed to load');
    }
  }
  d.log.error({ release: manifestOf(s.current)?.release, keyId: s.current.signed.signature.keyId }, 'updates/revoked-current: no release signed by a live key; degraded until a re-signed release arrives');
  return { degraded: 'revoked_key', floor };
}
