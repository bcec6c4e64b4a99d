import { Counter, type Registry } from 'prom-client';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import type { Manifest, ShadowTelemetry } from '../../shared/protocol/index.js';
import { ModelHost, type OpenSession, type Prediction } from '../runtime/host.js';
import type { ModelSessionOptions } from '../runtime/session.js';
import { InferenceStats } from '../status/telemetry.js';

/**
 * On-device shadow mode (issue 13 item 4): a candidate release loaded beside the running model (its
 * own ORT session in its own {@link ModelHost}, never the served one), run on the same live inputs
 * after the answer went out, until its manifest's `shadow.until`. It counts how often its top class
 * agrees with the running model's, keeps its latency, and hands disagreements to `onDisagreement`
 * (the daemon sends a sample as hard examples within the selector's caps). Live answers never wait
 * for it: at most `maxInFlight` shadow runs at once, the rest are counted as `skipped`.
 *
 * It ends by `drop(reason)`: `expired` (the window closed with no switch, also while offline),
 * `superseded` (another candidate), `switched` (the same bytes were installed as a normal release).
 * Each drop is logged, counted (`apprentice_edge_shadow_dropped_total{reason}`) and reported in the
 * next telemetry (`state: 'dropped'`), and frees the session and, through `onDropped`, the slot file.
 */

export const SHADOW_DROP_REASONS = ['expired', 'superseded', 'switched', 'restart', 'stopped'] as const;
export type ShadowDropReason = (typeof SHADOW_DROP_REASONS)[number];

/** One shadowed example the two models disagreed on. */
export interface ShadowDisagreement {
  /** The model input (a view into the request's buffer). */
  input: Float32Array;
  /** The running model's probabilities (what the device answered). */
  probs: Float32Array;
  /** The running model's manifest. */
  manifest: Manifest;
  /** The shadow's probabilities. */
  shadowProbs: Float32Array;
}

export interface ShadowRunnerDeps {
  log?: Logger;
  /** Wall clock (the device's time floor in the daemon): compared with `shadow.until`. */
  now?: () => Date;
  sessionOptions?: ModelSessionOptions;
  openSession?: OpenSession;
  /** Shadow runs at once; default 1 (a Pi has few cores, and the served model comes first). */
  maxInFlight?: number;
  onDisagreement?: (d: ShadowDisagreement) => void;
  metrics?: Registry;
  /** Timers for the window's end; real ones by default. */
  setTimer?: (fn: () => void, ms: number) => { unref?: () => void };
  clearTimer?: (t: unknown) => void;
}

interface Active {
  host: ModelHost;
  manifest: Manifest;
  until: number;
  requests: number;
  agreements: number;
  skipped: number;
  errors: number;
  latency: InferenceStats;
  timer: unknown;
}

/** Longest timer Node accepts (~24.8 days); a later end is re-armed. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class ShadowRunner {
  private active: Active | undefined;
  /** The last shadow's final figures, reported until another one loads (so the cloud sees how it ended). */
  private ended: ShadowTelemetry | undefined;
  private inFlight = 0;
  private readonly log: Logger;
  private readonly now: () => Date;
  private readonly dropHandlers: ((sha256: string, reason: ShadowDropReason) => void)[] = [];
  private readonly droppedTotal: Counter<'reason'> | undefined;
  private readonly counts = { loaded: 0, dropped: 0, skipped: 0, errors: 0 };

  constructor(private readonly deps: ShadowRunnerDeps = {}) {
    this.log = deps.log ?? silentLogger;
    this.now = deps.now ?? (() => new Date());
    const reg = deps.metrics;
    this.droppedTotal = reg
      ? ((reg.getSingleMetric('apprentice_edge_shadow_dropped_total') as Counter<'reason'> | undefined) ??
        new Counter({ name: 'apprentice_edge_shadow_dropped_total', help: 'Shadow candidates dropped, by reason (expired: window ended with no switch)', labelNames: ['reason'] as const, registers: [reg] }))
      : undefined;
  }

  /** The candidate's sha256 while one is loaded. */
  get sha256(): string | undefined {
    return this.active?.manifest.artifact.sha256;
  }

  get release(): number | undefined {
    return this.active?.manifest.release;
  }

  /** Totals since start: loads, drops, examples skipped (busy) and failed shadow runs. */
  counters(): { loaded: number; dropped: number; skipped: number; errors: number } {
    return { ...this.counts };
  }

  /** Called with the sha256 of each dropped candidate (the update manager deletes its slot file). */
  onDropped(fn: (sha256: string, reason: ShadowDropReason) => void): void {
    this.dropHandlers.push(fn);
  }

  /**
   * Loads `manifest` (with `shadow.until`) from `path` and self-tests it in a session of its own; a
   * previous candidate is dropped as `superseded` first. Throws the host's ActivationError on failure.
   */
  async load(path: string, manifest: Manifest): Promise<void> {
    const until = manifest.shadow ? Date.parse(manifest.shadow.until) : NaN;
    if (!Number.isFinite(until)) throw new Error('not a shadow manifest (no shadow.until)');
    if (this.active) await this.drop('superseded');
    const host = new ModelHost({ sessionOptions: this.deps.sessionOptions, openSession: this.deps.openSession, log: this.log });
    try {
      await host.activate(path, manifest);
    } catch (err) {
      await host.dispose();
      throw err;
    }
    const a: Active = { host, manifest, until, requests: 0, agreements: 0, skipped: 0, errors: 0, latency: new InferenceStats({ capacity: 512, maxAgeMs: Number.MAX_SAFE_INTEGER }), timer: undefined };
    this.active = a;
    this.ended = undefined;
    this.counts.loaded++;
    this.arm(a);
    this.log.info({ model: manifest.model, release: manifest.release, sha256: manifest.artifact.sha256, until: manifest.shadow!.until }, 'shadow/loaded');
  }

  /**
   * After the running model answered `n` examples of `input`: runs the shadow on them (not awaited by
   * the caller) and compares top classes row by row. Never throws; the window's end is checked here
   * too, so a stopped clock or lost timer cannot keep a candidate past `until`.
   */
  observe(input: Float32Array, n: number, running: Prediction): void {
    const a = this.active;
    if (!a) return;
    if (this.now().getTime() >= a.until) {
      void this.drop('expired');
      return;
    }
    if (this.inFlight >= (this.deps.maxInFlight ?? 1)) {
      a.skipped += n;
      this.counts.skipped += n;
      return;
    }
    this.inFlight++;
    void a.host
      .predict(input, n)
      .then((shadow) => this.compare(a, input, n, running, shadow))
      .catch((err: unknown) => {
        a.errors++;
        this.counts.errors++;
        this.log.warn({ err: (err as Error).message, release: a.manifest.release }, 'shadow/run-failed');
      })
      .finally(() => this.inFlight--);
  }

  private compare(a: Active, input: Float32Array, n: number, running: Prediction, shadow: Prediction): void {
    a.latency.observed({ ok: true, latencyMs: shadow.latencyMs });
    const classes = running.probs.length / n;
    const size = input.length / n;
    if (shadow.probs.length !== running.probs.length) {
      // Another class count cannot be compared; the cloud refuses such a candidate before it ships.
      a.errors++;
      this.counts.errors++;
      return;
    }
    for (let r = 0; r < n; r++) {
      const mine = running.probs.subarray(r * classes, (r + 1) * classes);
      const theirs = shadow.probs.subarray(r * classes, (r + 1) * classes);
      a.requests++;
      if (argmax(mine) === argmax(theirs)) {
        a.agreements++;
        continue;
      }
      try {
        this.deps.onDisagreement?.({ input: input.subarray(r * size, (r + 1) * size), probs: mine, manifest: running.manifest, shadowProbs: theirs });
      } catch (err) {
        this.log.error({ err }, 'shadow/disagreement-handler failed');
      }
    }
  }

  /** The figures for telemetry: the live candidate's, else how the last one ended, else undefined. */
  report(): ShadowTelemetry | undefined {
    const a = this.active;
    if (!a) return this.ended;
    return figures(a, 'running');
  }

  /** Ends the candidate: frees its session (after runs in flight), reports and logs why. Idempotent. */
  async drop(reason: ShadowDropReason): Promise<void> {
    const a = this.active;
    if (!a) return;
    this.active = undefined;
    (this.deps.clearTimer ?? ((t) => clearTimeout(t as NodeJS.Timeout)))(a.timer);
    this.ended = { ...figures(a, 'dropped'), reason };
    this.counts.dropped++;
    this.droppedTotal?.inc({ reason });
    const level = reason === 'expired' || reason === 'restart' ? 'warn' : 'info';
    this.log[level]({ release: a.manifest.release, sha256: a.manifest.artifact.sha256, reason, requests: a.requests, agreements: a.agreements }, 'shadow/dropped');
    await a.host.dispose();
    for (const fn of this.dropHandlers) {
      try {
        fn(a.manifest.artifact.sha256, reason);
      } catch (err) {
        this.log.error({ err }, 'shadow/drop-handler failed');
      }
    }
  }

  async dispose(): Promise<void> {
    await this.drop('stopped');
  }

  private arm(a: Active): void {
    const ms = Math.max(0, a.until - this.now().getTime());
    const set = this.deps.setTimer ?? ((fn, t) => setTimeout(fn, t));
    const t = set(() => {
      if (this.active !== a) return;
      if (ms > MAX_TIMER_MS) return this.arm(a);
      void this.drop('expired');
    }, Math.min(ms, MAX_TIMER_MS));
    t.unref?.();
    a.timer = t;
  }
}

function figures(a: Active, state: ShadowTelemetry['state']): ShadowTelemetry {
  const w = a.latency.window();
  const m = a.manifest;
  return { model: m.model, release: m.release, sha256: m.artifact.sha256, until: m.shadow!.until, state, requests: a.requests, agreements: a.agreements, skipped: a.skipped, latencyMs: { p50: w.p50, p95: w.p95 } };
}

function argmax(p: Float32Array): number {
  let best = 0;
  for (let j = 1; j < p.length; j++) if (p[j]! > p[best]!) best = j;
  return best;
}
