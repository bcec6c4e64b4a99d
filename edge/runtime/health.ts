import type { ROLLBACK_REASONS } from '../../shared/protocol/index.js';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import type { InferenceObservation, InferenceObserver, LoadedModel } from './host.js';
import { percentile } from '../../shared/util/percentile.js';

export type RollbackReason = (typeof ROLLBACK_REASONS)[number];

export interface HealthVerdict {
  sha256: string;
  model: string;
  release: number;
  /** Set on `unhealthy`. */
  reason?: RollbackReason;
  detail: string;
  requests: number;
  errors: number;
  nonFinite: number;
  /** p95 run latency over the window, when enough samples were seen. */
  p95Ms: number | null;
}

export interface HealthGateOptions {
  /** How long a new model is watched after a switch. */
  windowMs?: number;
  /** The window also ends (early) after this many observed runs. */
  windowRequests?: number;
  /** p95 run latency over the window above this is unhealthy; undefined disables the check. */
  latencyBudgetMs?: number;
  /** Fewer latency samples than this and the latency check is skipped (too little evidence). */
  minLatencySamples?: number;
  /** Unhealthy once errors ≥ `minErrors` and errors / runs > `maxErrorRate`. */
  maxErrorRate?: number;
  minErrors?: number;
  /**
   * NaN/±Inf outputs are judged as a rate, never one at a time (issue 10: one request of ±3e38 makes a
   * healthy model output NaN): unhealthy once at least `maxNonFinite` runs produced them and they are more
   * than `maxNonFiniteRate` of the runs, with at least `minRequests` runs seen, or at the window's end.
   */
  maxNonFinite?: number;
  maxNonFiniteRate?: number;
  /** Runs needed before a rate may end the window early (at its end, the rate over what was seen decides). */
  minRequests?: number;
  onUnhealthy: (v: HealthVerdict) => void;
  onCommitted: (v: HealthVerdict) => void;
  log?: Logger;
}

/** Latency samples kept per window; past it, reservoir sampling keeps an unbiased subset. */
const MAX_SAMPLES = 10_000;

interface Window {
  model: LoadedModel;
  requests: number;
  errors: number;
  nonFinite: number;
  latencies: number[];
  seen: number;
  timer: NodeJS.Timeout;
}

/**
 * Post-switch health gate. For a window after each switch it watches the new model's runs (errors,
 * NaN/Inf outputs, p95 latency against a budget) and decides exactly once: `onUnhealthy` (the daemon rolls
 * back) or, when the window passes cleanly, `onCommitted`. A newer switch abandons the current window.
 * Runs still finishing on the previous model (other sha256) are ignored.
 *
 * @example
 * const gate = new HealthGate({ windowMs: 60_000, latencyBudgetMs: 20, onUnhealthy: rollback, onCommitted: report });
 * const host = new ModelHost({ observer: gate });
 */
export class HealthGate implements InferenceObserver {
  private window: Window | undefined;
  private readonly o: Required<Omit<HealthGateOptions, 'latencyBudgetMs'>> & { latencyBudgetMs: number | undefined };

  constructor({
    windowMs = 60_000,
    windowRequests = Number.POSITIVE_INFINITY,
    latencyBudgetMs,
    minLatencySamples = 20,
    maxErrorRate = 0.05,
    minErrors = 3,
    maxNonFinite = 3,
    maxNonFiniteRate = 0.05,
    minRequests = 20,
    onUnhealthy,
    onCommitted,
    log = silentLogger,
  }: HealthGateOptions) {
    this.o = { windowMs, windowRequests, latencyBudgetMs, minLatencySamples, maxErrorRate, minErrors, maxNonFinite, maxNonFiniteRate, minRequests, onUnhealthy, onCommitted, log };
  }

  /** The sha256 under watch, if a window is open. */
  get watching(): string | undefined {
    return this.window?.model.sha256;
  }

  switched(model: LoadedModel): void {
    this.close();
    const timer = setTimeout(() => this.finish(), this.o.windowMs);
    timer.unref();
    this.window = { model, requests: 0, errors: 0, nonFinite: 0, latencies: [], seen: 0, timer };
  }

  observed(obs: InferenceObservation): void {
    const w = this.window;
    if (!w || obs.sha256 !== w.model.sha256) return;
    w.requests++;
    if (!obs.ok) {
      if (obs.nonFinite) w.nonFinite++;
      else w.errors++;
    } else {
      w.seen++;
      if (w.latencies.length < MAX_SAMPLES) w.latencies.push(obs.latencyMs);
      else {
        const j = Math.floor(Math.random() * w.seen);
        if (j < MAX_SAMPLES) w.latencies[j] = obs.latencyMs;
      }
    }
    if (w.requests >= this.o.minRequests && this.nonFiniteTooMany(w)) {
      this.unhealthy(w, 'nan_output', this.nonFiniteDetail(w));
    } else if (w.errors >= this.o.minErrors && w.errors / w.requests > this.o.maxErrorRate) {
      this.unhealthy(w, 'inference_errors', `${w.errors} of ${w.requests} runs failed`);
    } else if (w.requests >= this.o.windowRequests) {
      this.finish();
    }
  }

  /** Abandons the open window without a verdict. */
  dispose(): void {
    this.close();
  }

  private finish(): void {
    const w = this.window;
    if (!w) return;
    const p95 = this.p95(w);
    const budget = this.o.latencyBudgetMs;
    if (budget !== undefined && p95 !== null && p95 > budget) {
      this.unhealthy(w, 'latency_budget', `p95 latency ${p95.toFixed(2)} ms over ${w.latencies.length} runs exceeds the ${budget} ms budget`);
      return;
    }
    if (w.errors >= this.o.minErrors && w.errors / Math.max(1, w.requests) > this.o.maxErrorRate) {
      this.unhealthy(w, 'inference_errors', `${w.errors} of ${w.requests} runs failed`);
      return;
    }
    if (this.nonFiniteTooMany(w)) {
      this.unhealthy(w, 'nan_output', this.nonFiniteDetail(w));
      return;
    }
    if (w.nonFinite > 0) this.o.log.warn({ sha256: w.model.sha256, nonFinite: w.nonFinite, requests: w.requests }, 'health/non-finite-tolerated: below the rate that rolls back');
    this.close();
    const v = this.verdict(w, undefined, `window passed: ${w.requests} runs, ${w.errors} errors`);
    this.o.log.info(v, 'model committed');
    this.emit(() => this.o.onCommitted(v));
  }

  private nonFiniteTooMany(w: Window): boolean {
    return w.nonFinite >= this.o.maxNonFinite && w.nonFinite / Math.max(1, w.requests) > this.o.maxNonFiniteRate;
  }

  private nonFiniteDetail(w: Window): string {
    return `${w.nonFinite} of ${w.requests} runs produced NaN/Inf outputs (more than ${(this.o.maxNonFiniteRate * 100).toFixed(1)} %)`;
  }

  private unhealthy(w: Window, reason: RollbackReason, detail: string): void {
    this.close();
    const v = this.verdict(w, reason, detail);
    this.o.log.warn(v, 'model unhealthy');
    this.emit(() => this.o.onUnhealthy(v));
  }

  private p95(w: Window): number | null {
    return w.latencies.length >= this.o.minLatencySamples && w.latencies.length > 0 ? percentile(w.latencies, 95) : null;
  }

  private verdict(w: Window, reason: RollbackReason | undefined, detail: string): HealthVerdict {
    const { manifest, sha256 } = w.model;
    return {
      sha256,
      model: manifest.model,
      release: manifest.release,
      ...(reason ? { reason } : {}),
      detail,
      requests: w.requests,
      errors: w.errors,
      nonFinite: w.nonFinite,
      p95Ms: this.p95(w),
    };
  }

  private close(): void {
    if (this.window) clearTimeout(this.window.timer);
    this.window = undefined;
  }

  private emit(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.o.log.error({ err }, 'edge/runtime/health callback failed');
    }
  }
}
