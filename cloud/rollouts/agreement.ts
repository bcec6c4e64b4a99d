import { and, eq, inArray } from 'drizzle-orm';
import type { Logger } from '../../shared/log/index.js';
import type { StoreRegistry } from '../registry/open.js';
import type { RolloutDeviceRow, RolloutRow } from '../registry/schema.js';
import { q } from '../registry/tx.js';
import { shadowIndex, shadowVerdict, type Evidence, type ShadowIndex } from '../shadow/gate.js';
import { shadowEvalOfRelease } from '../shadow/store.js';
import { logTransition, moveMember } from './store.js';

/**
 * Agreement-gated waves (issue 13 item 3, cloud/shadow/gate.ts): before a waiting device is given the
 * release, its shadow figures are read; a device the candidate is worse for (paired 95% upper bound of
 * candidate − running accuracy below −margin) becomes `held_back` with the figures as its reason. It is
 * not a failure (counts toward neither side) and nothing is sent: it stays on its release. The wave goes
 * on with its other devices.
 */
export class AgreementGate {
  /** Shadow rows per release: written once by the release's round, so cached for the process. */
  private readonly cache = new Map<number, ShadowIndex>();
  /** Devices held back by this process (a bound that refuses logs and counts). */
  heldBack = 0;

  constructor(private readonly deps: { registry: StoreRegistry; log: Logger; now: () => Date }) {}

  async indexOf(seq: number): Promise<ShadowIndex> {
    let idx = this.cache.get(seq);
    if (!idx) {
      idx = shadowIndex(await shadowEvalOfRelease(this.deps.registry, seq));
      if (this.cache.size > 256) this.cache.clear();
      this.cache.set(seq, idx);
    }
    return idx;
  }

  /** Moves the held devices of `ids` (waiting rows of `r`) to held_back; returns the others. */
  async screen(r: RolloutRow, ids: readonly string[]): Promise<string[]> {
    if (!ids.length) return [];
    const idx = await this.indexOf(r.releaseSeq);
    if (idx.empty) return [...ids];
    const reg = this.deps.registry;
    const { devices } = reg.t;
    const running = new Map<string, number | null>();
    for (let i = 0; i < ids.length; i += 500) {
      for (const d of await reg.q.select({ id: devices.id, runningSeq: devices.runningSeq }).from(devices).where(inArray(devices.id, ids.slice(i, i + 500)))) running.set(d.id, d.runningSeq);
    }
    const pass: string[] = [];
    for (const id of ids) {
      const v = shadowVerdict(idx, id, r.agreementMargin, running.get(id) ?? null);
      if (!v.hold) {
        pass.push(id);
        continue;
      }
      const now = this.deps.now();
      if (await reg.tx((tx, t) => moveMember(tx, t, { rolloutId: r.id, deviceId: id, from: 'waiting', to: 'held_back', now, reason: v.reason }))) {
        this.heldBack++;
        this.deps.log.warn({ rollout: r.id, deviceId: id, release: r.releaseSeq, delta: v.figures?.delta, deltaHigh: v.figures?.deltaHigh, evidence: v.evidence }, 'rollouts/held-back');
      }
    }
    return pass;
  }

  /**
   * A late device converging to a finished rollout (no row, or one it is not waiting in): true when the
   * gate holds it, recorded as a `held_back` row so the rollout view shows why.
   */
  async holdsLate(r: RolloutRow, deviceId: string, runningSeq: number | null): Promise<boolean> {
    const reg = this.deps.registry;
    const { rolloutDevices } = reg.t;
    const [row] = await reg.q.select({ state: rolloutDevices.state }).from(rolloutDevices).where(and(eq(rolloutDevices.rolloutId, r.id), eq(rolloutDevices.deviceId, deviceId))).limit(1);
    if (row?.state === 'held_back') return true;
    const v = shadowVerdict(await this.indexOf(r.releaseSeq), deviceId, r.agreementMargin, runningSeq);
    if (!v.hold) return false;
    const now = this.deps.now();
    if (!row) {
      await reg.tx(function* (tx, t) {
        yield* q(tx.insert(t.rolloutDevices).values({ rolloutId: r.id, deviceId, canary: false, wave: r.wave, state: 'held_back', reason: v.reason, updatedAt: now.toISOString() }).onConflictDoNothing());
        yield* logTransition(tx, t, { rolloutId: r.id, deviceId, at: now, from: null, to: 'held_back', reason: v.reason });
      });
    }
    this.heldBack++;
    this.deps.log.warn({ rollout: r.id, deviceId, release: r.releaseSeq, evidence: v.evidence }, 'rollouts/held-back-late');
    return true;
  }
}

/** What the rollout view shows per device: the evidence and its figures, or why there is none. */
export interface DeviceShadowView {
  evidence: Evidence;
  /** Would the gate hold it on these figures (as evaluated; the held_back row has the decision). */
  hold: boolean;
  reason: string;
  samples: number | null;
  candidateAccuracy: number | null;
  runningAccuracy: number | null;
  agreement: number | null;
  delta: number | null;
  deltaLow: number | null;
  deltaHigh: number | null;
}

/** Per-device shadow figures of a rollout (the API and the console). */
export async function rolloutShadowView(registry: StoreRegistry, r: Pick<RolloutRow, 'releaseSeq' | 'agreementMargin'>, rows: readonly Pick<RolloutDeviceRow, 'deviceId'>[]): Promise<Record<string, DeviceShadowView>> {
  const idx = shadowIndex(await shadowEvalOfRelease(registry, r.releaseSeq, rows.map((d) => d.deviceId)));
  const out: Record<string, DeviceShadowView> = {};
  for (const { deviceId } of rows) {
    const v = shadowVerdict(idx, deviceId, r.agreementMargin);
    const f = v.figures;
    out[deviceId] = {
      evidence: v.evidence,
      hold: v.hold,
      reason: v.reason,
      samples: f?.samples ?? null,
      candidateAccuracy: f?.candidateAccuracy ?? null,
      runningAccuracy: f?.runningAccuracy ?? null,
      agreement: f?.agreement ?? null,
      delta: f?.delta ?? null,
      deltaLow: f?.deltaLow ?? null,
      deltaHigh: f?.deltaHigh ?? null,
    };
  }
  return out;
}
