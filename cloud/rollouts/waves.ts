import { and, eq, inArray, isNull, lte } from 'drizzle-orm';
import type { Logger } from '../../shared/log/index.js';
import type { StoreRegistry } from '../registry/open.js';
import type { RolloutRow } from '../registry/schema.js';
import { q, type TxBody } from '../registry/tx.js';
import type { ReleasePublisher } from '../fleet/publisher.js';
import type { Deliverable, DeliveryItem } from './deliverable.js';
import { wavesOf } from './policy.js';
import { logTransition, members, moveMember, patchMember, setRollout, type RolloutMember } from './store.js';

/** After this many offline canaries replaced in one wave, the wave pauses (issue 8). */
export const MAX_REPLACEMENTS = 3;

export interface WaveChecksDeps {
  registry: StoreRegistry;
  publisher: ReleasePublisher;
  log: Logger;
  now: () => Date;
  requireTelemetry?: boolean;
  give(r: RolloutRow, rel: DeliveryItem, ids: string[]): Promise<void>;
  /** What the rollout ships (model or agent release, issue 14). */
  deliverable(r: RolloutRow): Deliverable;
  /** The agreement gate (agreement.ts): moves held devices to held_back, returns the ones to give the release. */
  screen(r: RolloutRow, ids: string[]): Promise<string[]>;
  reissueAbove(r: RolloutRow, prev: number, floor: number): Promise<number>;
  /** Store steps outside a transaction, and in one (steps.ts `read`, `write`). */
  read<R>(body: TxBody<R>): Promise<R>;
  write<R>(body: TxBody<R>): Promise<R>;
}

function telemetryOf(m: RolloutMember): { release: number | null; health: string } | undefined {
  const t = m.device.lastTelemetry as { release?: number | null; health?: string } | null;
  return t && typeof t.health === 'string' ? { release: t.release ?? null, health: t.health } : undefined;
}

/**
 * The per-wave parts of a rollout step: reconcile installs, device timeouts, quarantine, offline-canary
 * replacement, and the soak/success check before the next wave. Each reads only the rows it needs (by
 * state and wave through the `rollout_devices_state_idx` index), not every member per event.
 */
export class WaveChecks {
  constructor(private readonly deps: WaveChecksDeps) {}

  private read<R>(body: TxBody<R>): Promise<R> {
    return this.deps.read(body);
  }

  private write<R>(body: TxBody<R>): Promise<R> {
    return this.deps.write(body);
  }

  /** Updates the rollout (store.ts setRollout) in one transaction. */
  private set(r: Pick<RolloutRow, 'id'>, now: Date, patch: Parameters<typeof setRollout>[4], logAs?: Parameters<typeof setRollout>[5]): Promise<void> {
    return this.write((tx, t) => setRollout(tx, t, r.id, now, patch, logAs));
  }

  /** Starts wave `w`: its waiting devices get the release; the soak clock and replacement count restart. */
  async startWave(r: RolloutRow, w: number): Promise<void> {
    const now = this.deps.now();
    const n = wavesOf(r).length;
    // A single wave has no canaries: the whole target at once.
    const state = w === 0 && n > 1 ? 'canary' : 'fleet';
    await this.set(
      r,
      now,
      { state, wave: w, waveStartedAt: now.toISOString(), canaryHealthySince: null, replacements: 0, ...(w === 0 ? { canaryStartedAt: now.toISOString() } : {}) },
      { from: r.state, to: state, reason: `wave ${w + 1}/${n} started` },
    );
    const started = { ...r, state, wave: w };
    this.deps.log.info({ rollout: r.id, wave: w + 1, waves: n }, 'rollouts/wave-started');
    await this.giveWaiting(started);
  }

  /**
   * Waiting rows of started waves get the release (a new wave, a late device, a publish that failed
   * before), unless the agreement gate holds them back on their shadow figures.
   */
  async giveWaiting(r: RolloutRow): Promise<void> {
    const waiting = await this.read((tx, t) =>
      q(
        tx
          .select({ deviceId: t.rolloutDevices.deviceId })
          .from(t.rolloutDevices)
          .where(and(eq(t.rolloutDevices.rolloutId, r.id), eq(t.rolloutDevices.state, 'waiting'), lte(t.rolloutDevices.wave, r.wave))),
      ),
    );
    const ids = waiting.length ? await this.deps.screen(r, waiting.map((w) => w.deviceId)) : [];
    if (ids.length) await this.deps.give(r, await this.deps.deliverable(r).item(r.releaseSeq), ids);
  }

  /**
   * The device's status says it runs the release: as good as an `installed` event (which may be lost).
   * A device already terminal (timed out, quarantined) only gets its late install recorded.
   */
  async reconcile(r: RolloutRow): Promise<void> {
    const now = this.deps.now();
    const kind = this.deps.deliverable(r);
    const rows = await this.read(function* (tx, t) {
      const { rolloutDevices, devices } = t;
      const running = yield* kind.running(tx, t, r);
      return yield* q(
        tx
          .select({ deviceId: rolloutDevices.deviceId, state: rolloutDevices.state })
          .from(rolloutDevices)
          .innerJoin(devices, eq(devices.id, rolloutDevices.deviceId))
          .where(and(eq(rolloutDevices.rolloutId, r.id), isNull(rolloutDevices.installedAt), running, inArray(rolloutDevices.state, ['desired', 'timed_out', 'quarantined', 'incompatible', 'held_back']))),
      );
    });
    if (!rows.length) return;
    await this.write(function* (tx, t) {
      for (const row of rows) {
        if (row.state === 'desired') {
          yield* moveMember(tx, t, { rolloutId: r.id, deviceId: row.deviceId, from: 'desired', to: 'installed', now, reason: 'status reports the release running', patch: { installedAt: now.toISOString() } });
        } else {
          yield* patchMember(tx, t, r.id, row.deviceId, { installedAt: now.toISOString() });
          yield* logTransition(tx, t, { rolloutId: r.id, deviceId: row.deviceId, at: now, from: row.state, to: row.state, reason: `installed after ${row.state}` });
        }
      }
    });
  }

  /** `desired` rows past their deadline → `timed_out`. Not a failure: the retained desired stays, so the device still converges. */
  async timeouts(r: RolloutRow): Promise<void> {
    const now = this.deps.now();
    const due = await this.read((tx, t) =>
      q(
        tx
          .select({ deviceId: t.rolloutDevices.deviceId })
          .from(t.rolloutDevices)
          .where(and(eq(t.rolloutDevices.rolloutId, r.id), eq(t.rolloutDevices.state, 'desired'), lte(t.rolloutDevices.deadlineAt, now.toISOString()))),
      ),
    );
    if (due.length) {
      await this.write(function* (tx, t) {
        for (const d of due) yield* moveMember(tx, t, { rolloutId: r.id, deviceId: d.deviceId, from: 'desired', to: 'timed_out', now, reason: `not settled within ${r.deviceTimeoutSeconds} s` });
      });
    }
    if (due.length) this.deps.log.info({ rollout: r.id, devices: due.length }, 'rollouts/timed-out');
  }

  /**
   * Below the threshold a failed device is quarantined: its running release (or the bad release's parent)
   * becomes its retained desired again, re-issued above the sequence the device has seen, so neither a
   * restart nor a reconnect makes it retry the bad release.
   */
  async quarantineFailed(r: RolloutRow): Promise<void> {
    const failed = await this.read((tx, t) => members(tx, t, r.id, { states: ['failed'] }));
    if (!failed.length) return;
    const kind = this.deps.deliverable(r);
    const parent = (await kind.item(r.releaseSeq)).parent;
    for (const m of failed) {
      const now = this.deps.now();
      // A model device's running release is known (status); an agent device that failed runs its previous version.
      const runningSeq = r.kind === 'model' ? m.device.runningSeq : null;
      const running = runningSeq !== null && runningSeq !== r.releaseSeq ? runningSeq : parent;
      if (running === null) {
        await this.write((tx, t) => moveMember(tx, t, { rolloutId: r.id, deviceId: m.deviceId, from: 'failed', to: 'quarantined', now, reason: `${m.reason ?? 'failed'}; no previous release to put back` }));
        continue;
      }
      const floor = Math.max(r.releaseSeq, (await this.read((tx, t) => kind.desiredOf(tx, t, m.deviceId))) ?? 0);
      const seq = running > floor ? running : await this.deps.reissueAbove(r, running, floor);
      const rel = await kind.item(seq);
      await rel.ensure();
      await rel.publish(m.deviceId);
      await this.write(function* (tx, t) {
        yield* kind.setDesired(tx, t, m.deviceId, seq);
        yield* moveMember(tx, t, { rolloutId: r.id, deviceId: m.deviceId, from: 'failed', to: 'quarantined', now, reason: `${m.reason ?? 'failed'}; kept on release ${running}${seq !== running ? ` (re-issued as ${seq})` : ''}` });
      });
      this.deps.log.warn({ rollout: r.id, deviceId: m.deviceId, reason: m.reason, release: running, desired: seq }, 'rollouts/quarantined');
    }
  }

  /** Offline for longer than canaryGraceSeconds since it was given the release or last seen. */
  private gone(r: RolloutRow, m: RolloutMember, now: Date): boolean {
    if (m.device.online) return false;
    const since = Math.max(Date.parse(m.desiredAt ?? r.updatedAt), m.device.lastSeen ? Date.parse(m.device.lastSeen) : 0);
    return now.getTime() - since >= r.canaryGraceSeconds * 1000;
  }

  /**
   * A device of the current wave (not the last) offline for longer than canaryGraceSeconds moves to the
   * next wave and a waiting device (online first) takes its place; after MAX_REPLACEMENTS in one wave the
   * rollout pauses. Returns whether it paused.
   */
  async replaceOffline(r: RolloutRow): Promise<boolean> {
    if (r.wave >= wavesOf(r).length - 1) return false;
    const now = this.deps.now();
    const gone = (await this.read((tx, t) => members(tx, t, r.id, { wave: r.wave, states: ['desired'] }))).filter((m) => this.gone(r, m, now));
    let replacements = r.replacements;
    for (const m of gone) {
      if (replacements >= MAX_REPLACEMENTS) break;
      const spare = (await this.read((tx, t) => members(tx, t, r.id, { minWave: r.wave + 1, states: ['waiting'] }))).sort((a, b) => Number(b.device.online) - Number(a.device.online) || a.wave - b.wave)[0];
      if (!spare) return false; // nobody to replace it with: it times out like any device
      const reason = `replaced: offline for more than ${r.canaryGraceSeconds} s`;
      replacements++;
      const n = replacements;
      // The swap and its count in one transaction (they were separate statements before issue 15).
      await this.write(function* (tx, t) {
        yield* patchMember(tx, t, r.id, m.deviceId, { wave: r.wave + 1, canary: false, reason, updatedAt: now.toISOString() });
        yield* logTransition(tx, t, { rolloutId: r.id, deviceId: m.deviceId, at: now, from: 'desired', to: 'desired', reason: `${reason}; moved to wave ${r.wave + 2} for ${spare.deviceId}` });
        yield* patchMember(tx, t, r.id, spare.deviceId, { wave: r.wave, canary: r.wave === 0, updatedAt: now.toISOString() });
        yield* logTransition(tx, t, { rolloutId: r.id, deviceId: spare.deviceId, at: now, from: 'waiting', to: 'waiting', reason: `replaces offline ${m.deviceId} in wave ${r.wave + 1}` });
        yield* setRollout(tx, t, r.id, now, { replacements: n, canaryHealthySince: null }, { from: r.state, to: r.state, reason: `wave ${r.wave + 1}: ${m.deviceId} offline, replaced by ${spare.deviceId} (${n}/${MAX_REPLACEMENTS})` });
      });
      this.deps.log.warn({ rollout: r.id, offline: m.deviceId, replacement: spare.deviceId, replacements }, 'rollouts/canary-replaced');
    }
    if (replacements !== r.replacements) await this.giveWaiting({ ...r, replacements });
    if (replacements >= MAX_REPLACEMENTS && !r.pausedAt) {
      const reason = `wave ${r.wave + 1} paused: ${replacements} offline devices replaced`;
      await this.set(r, now, { pausedAt: now.toISOString(), pauseReason: reason }, { from: r.state, to: r.state, reason });
      this.deps.log.warn({ rollout: r.id, wave: r.wave + 1 }, 'rollouts/paused-replacements');
      return true;
    }
    return false;
  }

  /**
   * The current wave passed: no device of it still pending (offline ones count only for
   * canaryGraceSeconds), at least one installed (or, with none installed, none failed), and every
   * installed one healthy (its last telemetry 'ok' for the release when required) for soakSeconds.
   */
  async wavePassed(r: RolloutRow): Promise<boolean> {
    const now = this.deps.now();
    const wave = await this.read((tx, t) => members(tx, t, r.id, { wave: r.wave }));
    const resetSoak = async () => {
      if (r.canaryHealthySince) await this.set(r, now, { canaryHealthySince: null });
      return false;
    };
    // An online device still pending holds the wave; an offline one only for canaryGraceSeconds (then it is replaced, or left to its timeout).
    if (wave.some((m) => m.state === 'waiting' || (m.state === 'desired' && !this.gone(r, m, now)))) return resetSoak();
    const installed = wave.filter((m) => m.state === 'installed');
    if (!installed.length) {
      if (wave.some((m) => m.state === 'waiting' || m.state === 'desired')) return resetSoak();
      if (wave.some((m) => m.state === 'quarantined' || m.state === 'failed')) {
        const reason = `wave ${r.wave + 1} paused: no device installed the release and some failed`;
        await this.set(r, now, { pausedAt: now.toISOString(), pauseReason: reason }, { from: r.state, to: r.state, reason });
        return false;
      }
      return true; // every device of the wave timed out or moved on: nothing to soak
    }
    // Agent rollouts (issue 14): the status naming the version is the evidence; telemetry names model releases.
    const t = (m: RolloutMember) => (this.deps.deliverable(r).telemetryEvidence ? telemetryOf(m) : { release: r.releaseSeq, health: 'ok' });
    if (installed.some((m) => t(m)?.release === r.releaseSeq && t(m)?.health !== 'ok')) return resetSoak();
    const since = r.canaryHealthySince ?? now.toISOString();
    if (!r.canaryHealthySince) await this.set(r, now, { canaryHealthySince: since });
    if (now.getTime() - Date.parse(since) < r.soakSeconds * 1000) return false;
    const evidence = installed.every((m) => t(m)?.release === r.releaseSeq && t(m)?.health === 'ok');
    return !(this.deps.requireTelemetry ?? true) || evidence;
  }
}
