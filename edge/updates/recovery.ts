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
  ctx: EventContext;
  log: Logger;
}

/** Parses a slot's stored manifest (local data that verified when it was stored). */
export function manifestOf(slot: SlotRecord | null): Manifest | null {
  const r = slot ? manifestSchema.safeParse(slot.signed.manifest) : undefined;
  return r?.success ? r.data : null;
}

/**
 * Activates the persisted current slot, else the previous one. Each is re-verified first: the
 * signature (a key removed from the trust list also stops old models) and the file's hash (a
 * truncated or corrupt slot is discarded).
 */
export async function restoreSlots(d: RecoveryDeps): Promise<{ outcome: RestoreOutcome; running: RunningModel | null }> {
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
    await d.state.save({ ...s, denied });
    emitSafely(d.ctx, deviceEvent(d.ctx, 'rolled_back', bad, { reason, detail: p.detail }));
    d.log.error({ sha256, reason, ...p }, 'updates/rollback-incomplete');
    return { outcome: p };
  }
  await d.state.save({ ...s, denied, current: prev, previous: null });
  await d.slots.prune([prev.sha256]);
  emitSafely(d.ctx, deviceEvent(d.ctx, 'rolled_back', bad, { reason, detail: `now serving release ${pm.release} (${prev.sha256.slice(0, 12)})` }));
  d.log.warn({ sha256, reason, to: pm.release }, 'updates/rolled-back');
  return { outcome: { status: 'rolled_back', to: { release: pm.release, sha256: prev.sha256 } }, running: { model: pm.model, release: pm.release, sha256: prev.sha256 } };
}
