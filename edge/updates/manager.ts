import type { Logger } from '../../shared/log/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { verifyManifest } from '../../shared/manifest/index.js';
import { checkAssignment } from './assignment.js';
import { decodePayload, signedManifestSchema, type Manifest } from '../../shared/protocol/index.js';
import { createBackoff, type Backoff } from '../outbox/backoff.js';
import { deviceEvent, emitSafely, type EventContext } from './events.js';
import { ArtifactFetcher } from './fetch.js';
import { SlotStore } from './slots.js';
import { ShadowInstaller } from './shadow-install.js';
import { UpdateStateStore, type UpdateState } from './state.js';
import { applyRevocations, countTrialCrash, manifestOf, restoreSlots, rollbackSlot, type RecoveryDeps } from './recovery.js';
import {
  UpdateError,
  keysOf,
  type RejectReason,
  type RestoreOutcome,
  type RollbackOutcome,
  type RollbackReason,
  type RunningModel,
  type SlotRecord,
  type UpdateManagerDeps,
  type UpdateOutcome,
  DEFAULT_MAX_SEQUENCE_JUMP,
} from './types.js';


/**
 * The device's update pipeline (DESIGN.md "Edge rules"): verify → refuse (stale, expired, denied,
 * input) → fetch → slot → activate through the {@link ModelHost} → persist → report. One install
 * runs at a time; a newer desired manifest aborts a download in progress. Nothing touches the disk
 * before the signature verified.
 */

interface Candidate {
  manifest: Manifest;
  signed: SlotRecord['signed'];
  resolve: (o: UpdateOutcome) => void;
}

class Superseded extends Error {
  override readonly name = 'Superseded';
  constructor(readonly by: number) {
    super(`superseded by release ${by}`);
  }
}

const PERMANENT: ReadonlySet<RejectReason> = new Set(['hash_mismatch', 'length_mismatch', 'load_failed', 'self_test_failed']);
const keyOf = (m: Manifest): string => `${m.release}:${m.artifact.sha256}`;

export class UpdateManager {
  private readonly log: Logger;
  private readonly ctx: EventContext;
  private readonly recovery: RecoveryDeps;
  private readonly failed = new Map<string, RejectReason>();
  private next: Candidate | undefined;
  private job: { cand: Candidate; abort: AbortController; phase: 'fetch' | 'activate' } | undefined;
  private worker: Promise<void> | undefined;
  private lock: Promise<unknown> = Promise.resolve();
  private retryTimer: NodeJS.Timeout | undefined;
  /** Which release the pending retry is for: its redelivered desired waits for the timer (issue 8). */
  private retryKey: string | undefined;
  private readonly retryBackoff: Backoff;
  private running: RunningModel | null = null;
  private degradedReason: string | null = null;
  private stopped = false;

  private constructor(
    private readonly deps: UpdateManagerDeps,
    private readonly state: UpdateStateStore,
    private readonly slots: SlotStore,
    private readonly fetcher: ArtifactFetcher,
    private readonly shadow: ShadowInstaller | undefined,
  ) {
    this.log = deps.log ?? silentLogger;
    const floor = deps.timeFloor;
    this.ctx = { deviceId: deps.deviceId, now: floor ? () => floor.now() : (deps.now ?? (() => new Date())), emit: deps.emit, log: this.log };
    // Jittered, so a fleet that failed together does not retry together (issue 8).
    this.retryBackoff = createBackoff({ initialMs: deps.retry ? deps.retry.initialMs : 30_000, maxMs: deps.retry ? deps.retry.maxMs : 15 * 60_000 });
    this.recovery = { state, slots, host: deps.host, trustedKeys: deps.trustedKeys, revokedKeys: deps.revokedKeys, ctx: this.ctx, log: this.log };
  }

  /** Opens the persisted state (throws UpdateStateError on a corrupt file) and the slot store. */
  static async create(deps: UpdateManagerDeps): Promise<UpdateManager> {
    const log = deps.log ?? silentLogger;
    const state = await UpdateStateStore.create({ dataDir: deps.dataDir });
    const slots = await SlotStore.create({ dataDir: deps.dataDir, log });
    const fetcher = await ArtifactFetcher.create({ dataDir: deps.dataDir, mqtt: deps.mqtt, log, mqttIdleTimeoutMs: deps.mqttIdleTimeoutMs, httpIdleTimeoutMs: deps.httpIdleTimeoutMs, fetchImpl: deps.fetchImpl, httpCredentials: deps.httpCredentials });
    const floor = deps.timeFloor;
    const now = floor ? () => floor.now() : (deps.now ?? (() => new Date()));
    // The installer calls back into the manager (precheck, reject), which exists only after it: late-bound.
    let self: UpdateManager | undefined;
    const shadow = deps.shadow
      ? await ShadowInstaller.create({ dataDir: deps.dataDir, fetcher, target: deps.shadow, log, now, precheck: (m) => self!.precheck(m), reject: (m, r, d) => self!.reject(m, r, d) })
      : undefined;
    self = new UpdateManager(deps, state, slots, fetcher, shadow);
    return self;
  }

  /** The model the host was last switched to by this manager (null before restore/install). */
  get current(): RunningModel | null {
    return this.running;
  }

  /** Why the device serves a model it no longer fully trusts (`revoked_key`), or null (status `degraded`). */
  get degraded(): string | null {
    return this.degradedReason;
  }

  /**
   * A new key set was accepted: `revoked` are its revoked key ids. Resets a floor held only by revoked
   * keys and moves off a current release whose key is no longer live (see applyRevocations).
   */
  trustChanged(revoked: Iterable<string>): Promise<void> {
    const set = new Set(revoked);
    return this.exclusive(async () => {
      const r = await applyRevocations(this.recovery, set);
      if (r.running) {
        this.running = r.running;
        this.retryBackoff.reset();
      }
      this.degradedReason = r.degraded;
      this.failed.clear(); // a release refused under the old keys may be acceptable now
    });
  }

  /** The persisted state (release floor, deny list, slots). */
  get persisted(): UpdateState {
    return this.state.get();
  }

  /**
   * At startup: activates the persisted current slot, else the previous one, so the daemon serves
   * what it served before a crash or restart. Each slot is re-verified (signature, file hash) first.
   */
  restore(): Promise<RestoreOutcome> {
    return this.exclusive(async () => {
      await countTrialCrash(this.recovery);
      const { outcome, running, degraded } = await restoreSlots(this.recovery);
      this.running = running;
      this.degradedReason = degraded ?? null;
      return outcome;
    });
  }

  /**
   * Handles a raw `desired` payload (bytes, text or parsed JSON). Resolves when this manifest is
   * installed, refused, ignored (already running or in progress) or superseded; never rejects.
   */
  handleDesired(payload: unknown): Promise<UpdateOutcome> {
    try {
      return this.accept(payload);
    } catch (err) {
      // A handler never crashes the daemon (STYLE.md 5); this is a bug, log it loudly.
      this.log.error({ err }, 'updates/desired-handler-failed');
      return Promise.resolve({ status: 'ignored', detail: `internal error: ${(err as Error)?.message ?? String(err)}` });
    }
  }

  private accept(payload: unknown, retried = false): Promise<UpdateOutcome> {
    if (this.stopped) return Promise.resolve({ status: 'ignored', detail: 'update manager stopped' });
    // An empty retained publish deletes the retained desired state ([MQTT-3.3.1-10]): nothing to do, nothing wrong.
    if ((payload instanceof Uint8Array && payload.byteLength === 0) || payload === '') return Promise.resolve({ status: 'ignored', detail: 'desired state cleared' });
    let envelope: unknown = payload;
    if (typeof payload === 'string' || payload instanceof Uint8Array) {
      try {
        envelope = decodePayload(signedManifestSchema, payload);
      } catch {
        // verifyManifest reports the precise reason below.
      }
    }
    const v = verifyManifest(envelope, keysOf(this.deps.trustedKeys));
    if (!v.ok && v.reason === 'unknown_key' && this.deps.keySetSettled && !retried) {
      // Maybe signed by a key of a key set still on its way (after a rotation): wait for it, then verify again.
      this.log.info({ detail: v.detail }, 'updates/unknown-key: waiting for the key set');
      return this.deps.keySetSettled().then(() => this.accept(payload, true));
    }
    if (!v.ok) return Promise.resolve(this.reject(null, v.reason, v.detail));
    const m = v.manifest;
    const misassigned = checkAssignment(envelope, m, this.ctx.deviceId, keysOf(this.deps.trustedKeys), this.deps.requireAssignment ?? false);
    if (misassigned) return Promise.resolve(this.reject(m, misassigned.reason, misassigned.detail));
    // A shadow release runs beside the served model and never moves the floor (issue 13 item 4).
    if (m.shadow) return this.shadow ? this.shadow.accept(m) : Promise.resolve({ status: 'ignored', detail: 'this daemon runs no shadow models' });
    const early = this.precheck(m);
    if (early) return Promise.resolve(early);
    // The retained desired comes again on every reconnect: it must not bypass the backoff of a failing release.
    if (this.retryTimer && this.retryKey === keyOf(m)) return Promise.resolve({ status: 'ignored', detail: `release ${m.release} is failing; its retry waits for the backoff` });
    for (const c of [this.job?.cand, this.next]) {
      if (!c) continue;
      if (keyOf(c.manifest) === keyOf(m)) return Promise.resolve({ status: 'ignored', detail: `release ${m.release} is already in progress` });
      if (c.manifest.release >= m.release) return Promise.resolve(this.reject(m, 'stale_release', `release ${c.manifest.release} is already being installed`));
    }
    return new Promise<UpdateOutcome>((resolve) => {
      this.next?.resolve({ status: 'superseded', by: m.release });
      // A private copy of exactly what verified: the caller's object must not change what gets persisted.
      // The assignment was checked above; the slot keeps the manifest and its signature only.
      const { assignment: _checked, ...rest } = JSON.parse(JSON.stringify(envelope)) as SlotRecord['signed'] & { assignment?: unknown };
      const signed = rest as SlotRecord['signed'];
      this.next = { manifest: m, signed, resolve };
      this.clearRetry();
      if (this.job?.phase === 'fetch') this.job.abort.abort(new Superseded(m.release));
      this.kick();
    });
  }

  /**
   * Called by the health gate after a bad switch: deny-lists `sha256`, switches back to the
   * previous slot, persists, and reports `rolled_back` with `reason`.
   */
  rollback(reason: RollbackReason, sha256: string): Promise<RollbackOutcome> {
    return this.exclusive(async () => {
      const { outcome, running } = await rollbackSlot(this.recovery, reason, sha256);
      if (running) this.running = running;
      return outcome;
    });
  }

  /**
   * The health gate passed `sha256`: it is no longer on trial, so a later crash is not blamed on it.
   * Returns whether a trial was ended.
   */
  commit(sha256: string): Promise<boolean> {
    return this.exclusive(async () => {
      const t = this.state.get().trial;
      if (t?.sha256 !== sha256) return false;
      await this.state.update((s) => ({ ...s, trial: null }));
      this.log.info({ sha256, release: t.release }, 'updates/committed');
      return true;
    });
  }

  /** Aborts a download in progress, waits for the pipeline to settle, and closes the state. */
  async dispose(): Promise<void> {
    this.stopped = true;
    this.clearRetry();
    this.next?.resolve({ status: 'ignored', detail: 'update manager stopped' });
    this.next = undefined;
    this.job?.abort.abort(new Error('update manager stopped'));
    await this.worker;
    await this.lock.catch(() => undefined);
    await this.state.dispose();
  }

  /**
   * Checks that need no download; emits and returns a refusal, or null to go on. Not private only for the
   * ShadowInstaller (shadow-install.ts), which applies the same checks to a shadow release.
   */
  precheck(m: Manifest): UpdateOutcome | null {
    const s = this.state.get();
    const sha = m.artifact.sha256;
    const cur = manifestOf(s.current);
    if (cur && cur.release === m.release && s.current?.sha256 === sha) return { status: 'ignored', detail: `release ${m.release} is already installed` };
    if (m.release <= s.highestRelease) return this.reject(m, 'stale_release', `release ${m.release} is not above the highest accepted release ${s.highestRelease}`);
    const jump = this.deps.maxSequenceJump ?? DEFAULT_MAX_SEQUENCE_JUMP;
    if (m.release - s.highestRelease > jump) {
      return this.reject(m, 'sequence_jump', `release ${m.release} is more than ${jump} above the release floor ${s.highestRelease} (maxSequenceJump)`);
    }
    const now = this.ctx.now();
    if (Date.parse(m.expiresAt) < now.getTime()) return this.reject(m, 'expired', `manifest expired at ${m.expiresAt} (now ${now.toISOString()})`);
    if (this.state.isDenied(sha)) return this.reject(m, 'denied_hash', `model ${sha} was rolled back on this device and is deny-listed`);
    const want = this.deps.expectedInput;
    if (want && (want.dtype !== m.input.dtype || want.shape.join('x') !== m.input.shape.join('x'))) {
      return this.reject(m, 'input_mismatch', `model input ${m.input.dtype}[${m.input.shape.join(',')}] differs from the device's ${want.dtype}[${want.shape.join(',')}]`);
    }
    const failed = this.failed.get(keyOf(m));
    if (failed) return { status: 'ignored', detail: `release ${m.release} already failed here (${failed})` };
    return null;
  }

  /** Logs and emits a `rejected` event (also for the ShadowInstaller's refusals). */
  reject(m: Manifest | null, reason: RejectReason, detail: string): UpdateOutcome {
    this.log.warn({ release: m?.release, sha256: m?.artifact.sha256, reason, detail }, 'updates/rejected');
    emitSafely(this.ctx, deviceEvent(this.ctx, 'rejected', m, { reason, detail }));
    return { status: 'rejected', reason, detail };
  }

  private kick(): void {
    if (this.worker || this.stopped) return;
    this.worker = (async () => {
      while (this.next && !this.stopped) {
        const cand = this.next;
        this.next = undefined;
        const job = { cand, abort: new AbortController(), phase: 'fetch' as 'fetch' | 'activate' };
        this.job = job;
        let outcome: UpdateOutcome;
        try {
          outcome = await this.install(job);
        } catch (err) {
          outcome = await this.failure(job, err);
        } finally {
          this.job = undefined;
        }
        cand.resolve(outcome);
      }
    })().finally(() => {
      this.worker = undefined;
      if (this.next) this.kick();
    });
  }

  private async install(job: NonNullable<UpdateManager['job']>): Promise<UpdateOutcome> {
    const { manifest: m, signed } = job.cand;
    const sha = m.artifact.sha256;
    const early = this.precheck(m); // the state may have moved while this candidate waited
    if (early) return early;
    let path: string;
    const shadowFile = await this.shadow?.fileOf(m.artifact);
    if (await this.slots.verify(m.artifact)) {
      path = this.slots.pathOf(sha); // the bytes are already in a slot (a re-issued release)
    } else if (shadowFile) {
      path = await this.slots.adopt(m.artifact, shadowFile); // the switch: the shadow's bytes become a slot
    } else {
      const got = await this.fetcher.fetch(m.artifact, { signal: job.abort.signal });
      path = await this.slots.adopt(m.artifact, got.path);
      await this.fetcher.forget(sha);
    }
    job.abort.signal.throwIfAborted();
    job.phase = 'activate';
    return this.exclusive(async () => {
      const late = this.precheck(m); // a rollback may have deny-listed it meanwhile
      if (late) return late;
      // On trial from before the load: a model that kills the daemon while loading is caught at the next start.
      await this.state.update((s) => ({ ...s, trial: { sha256: sha, model: m.model, release: m.release, crashes: s.trial?.sha256 === sha ? s.trial.crashes : 0 } }));
      try {
        await this.deps.host.activate(path, m);
      } catch (err) {
        await this.state.update((s) => ({ ...s, trial: s.trial?.sha256 === sha ? null : s.trial }));
        const reason: RejectReason = (err as { reason?: unknown }).reason === 'self_test_failed' ? 'self_test_failed' : 'load_failed';
        throw new UpdateError(reason, (err as Error)?.message ?? String(err), { cause: err });
      }
      const keyId = signed.signature.keyId;
      const next = await this.state.update((s) => ({
        ...s,
        keyFloors: { ...s.keyFloors, [keyId]: Math.max(s.keyFloors[keyId] ?? 0, m.release) },
        highestRelease: Math.max(s.highestRelease, m.release),
        current: { sha256: sha, signed },
        previous: s.current && s.current.sha256 !== sha ? s.current : s.previous,
      }));
      await this.deps.timeFloor?.observe(m.createdAt);
      this.running = { model: m.model, release: m.release, sha256: sha };
      this.degradedReason = null;
      this.failed.clear();
      this.retryBackoff.reset();
      await this.slots.prune([next.current?.sha256, next.previous?.sha256]);
      await this.fetcher.prune();
      this.log.info({ release: m.release, sha256: sha, model: m.model }, 'updates/installed');
      // The switch: the candidate now serves, so it stops being a shadow.
      if (this.deps.shadow?.sha256 === sha) await this.deps.shadow.drop('switched');
      emitSafely(this.ctx, deviceEvent(this.ctx, 'installed', m));
      return { status: 'installed', release: m.release, sha256: sha };
    });
  }

  private async failure(job: NonNullable<UpdateManager['job']>, err: unknown): Promise<UpdateOutcome> {
    const m = job.cand.manifest;
    const aborted: unknown = job.abort.signal.aborted ? job.abort.signal.reason : undefined;
    if (aborted instanceof Superseded) return { status: 'superseded', by: aborted.by };
    if (aborted !== undefined || this.stopped) return { status: 'ignored', detail: 'update manager stopped' };
    const reason: RejectReason = err instanceof UpdateError ? err.reason : job.phase === 'activate' ? 'load_failed' : 'download_failed';
    if (PERMANENT.has(reason)) {
      this.failed.set(keyOf(m), reason);
      if (this.failed.size > 64) this.failed.delete(this.failed.keys().next().value!);
      // A model that failed to load is not worth keeping; never delete the slots in use.
      const s = this.state.get();
      await this.slots.prune([s.current?.sha256, s.previous?.sha256]).catch((e: unknown) => this.log.warn({ err: e }, 'updates/prune-failed'));
    }
    if (reason === 'download_failed') this.scheduleRetry(job.cand);
    return this.reject(m, reason, (err as Error)?.message ?? String(err));
  }

  private scheduleRetry(cand: Candidate): void {
    if (this.deps.retry === false || this.stopped || this.next) return;
    const delay = this.retryBackoff.next();
    this.clearRetry();
    this.retryKey = keyOf(cand.manifest);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.retryKey = undefined;
      if (this.next || this.job || this.stopped) return;
      this.log.info({ release: cand.manifest.release }, 'updates/retry');
      this.next = { ...cand, resolve: () => undefined };
      this.kick();
    }, delay);
    this.retryTimer.unref();
  }

  private clearRetry(): void {
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.retryKey = undefined;
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn);
    this.lock = run.catch(() => undefined);
    return run;
  }
}
