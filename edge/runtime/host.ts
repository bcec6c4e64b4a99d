import type { Manifest } from '../../shared/protocol/index.js';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import { ActivationError, InferenceError, NoModelError } from './errors.js';
import { ModelSession, type InferenceRunner, type ModelSessionOptions } from './session.js';

/** The model currently served. */
export interface LoadedModel {
  manifest: Manifest;
  sha256: string;
  /** Epoch milliseconds of the switch. */
  loadedAt: number;
}

export interface Prediction {
  /** Probabilities [n × classes], row-major. */
  probs: Float32Array;
  manifest: Manifest;
  sha256: string;
  /** Time spent in the ORT run (including the wait for its turn on the event loop). */
  latencyMs: number;
}

/** Anything that answers predictions: the host itself, or a `MicroBatcher` in front of it. */
export interface Predictor {
  predict(batch: Float32Array, n: number): Promise<Prediction>;
}

export interface InferenceObservation {
  sha256: string;
  /** Examples in the run. */
  n: number;
  ok: boolean;
  /** The run succeeded but produced NaN/±Inf. */
  nonFinite: boolean;
  latencyMs: number;
}

/** Told about every switch and every run; the health gate implements it. Must not throw (errors are logged). */
export interface InferenceObserver {
  switched(model: LoadedModel): void;
  observed(o: InferenceObservation): void;
}

export type OpenSession = (path: string, manifest: Manifest, options: ModelSessionOptions) => Promise<InferenceRunner>;

export interface ModelHostDeps {
  sessionOptions?: ModelSessionOptions;
  observer?: InferenceObserver;
  log?: Logger;
  /** Epoch milliseconds; used for `loadedAt`. */
  clock?: () => number;
  /** Session factory; the real `ModelSession.create` unless a test injects a fake. */
  openSession?: OpenSession;
}

interface Slot extends LoadedModel {
  runner: InferenceRunner;
  /** Runs in flight on this session. */
  refs: number;
  /** No longer active: release once `refs` drops to zero. */
  retired: boolean;
  freed: boolean;
}

/**
 * Serves one model at a time and hot-swaps it. `activate` loads a new session and runs the manifest's
 * self-test before switching, so a bad model never takes traffic; the switch itself is one assignment.
 * Each `predict` holds a reference on the session it started on, so in-flight requests finish on the old
 * model, and the old session is released as soon as its last run ends (DESIGN.md "Edge rules": install =
 * …, switch atomically; in-flight requests finish on the old session). Releasing promptly matters: ORT
 * memory is native, and repeated swaps without release grow RSS (onnxruntime#25325).
 *
 * Structurally satisfies the `ModelHost` interface of edge/updates (`activate(path, manifest)`).
 */
export class ModelHost implements Predictor {
  private active: Slot | undefined;
  private activation: Promise<unknown> = Promise.resolve();
  private readonly releasing = new Set<Promise<void>>();
  private opened = 0;
  private released = 0;
  private disposed = false;
  private readonly log: Logger;
  private readonly clock: () => number;
  private readonly openSession: OpenSession;
  private readonly sessionOptions: ModelSessionOptions;
  private readonly observer: InferenceObserver | undefined;

  constructor({ sessionOptions = {}, observer, log = silentLogger, clock = Date.now, openSession = ModelSession.create }: ModelHostDeps = {}) {
    this.sessionOptions = sessionOptions;
    this.observer = observer;
    this.log = log;
    this.clock = clock;
    this.openSession = openSession;
  }

  get ready(): boolean {
    return this.active !== undefined;
  }

  current(): LoadedModel | undefined {
    const a = this.active;
    return a && { manifest: a.manifest, sha256: a.sha256, loadedAt: a.loadedAt };
  }

  /** Sessions opened / released so far; `live` counts the active one plus any still draining. */
  stats(): { opened: number; released: number; live: number; draining: number } {
    return { opened: this.opened, released: this.released, live: this.opened - this.released, draining: this.releasing.size };
  }

  /**
   * Loads `path`, self-tests it, then switches to it. Activations are serialised. On failure the current
   * model keeps serving and an `ActivationError` carries the reason.
   */
  activate(path: string, manifest: Manifest): Promise<void> {
    const run = this.activation.then(() => this.doActivate(path, manifest));
    this.activation = run.catch(() => undefined);
    return run;
  }

  private async doActivate(path: string, manifest: Manifest): Promise<void> {
    if (this.disposed) throw new ActivationError('load_failed', 'model host is disposed');
    let runner: InferenceRunner;
    try {
      runner = await this.openSession(path, manifest, this.sessionOptions);
    } catch (err) {
      if (err instanceof ActivationError) throw err;
      throw new ActivationError('load_failed', `could not load ${path}: ${(err as Error).message}`, { cause: err });
    }
    this.opened++;
    try {
      await this.selfTest(runner, manifest);
    } catch (err) {
      this.releaseRunner(runner);
      throw err;
    }
    const slot: Slot = { runner, manifest, sha256: manifest.artifact.sha256, loadedAt: this.clock(), refs: 0, retired: false, freed: false };
    const previous = this.active;
    this.active = slot;
    this.log.info({ model: manifest.model, release: manifest.release, sha256: slot.sha256, previous: previous?.manifest.release ?? null }, 'model activated');
    if (previous) this.retire(previous);
    this.notify('switched', () => this.observer?.switched({ manifest, sha256: slot.sha256, loadedAt: slot.loadedAt }));
  }

  /** Compares the raw output (logits or probabilities, as the manifest's output kind) with the expected one. */
  private async selfTest(runner: InferenceRunner, manifest: Manifest): Promise<void> {
    const { input, expected, tolerance } = manifest.selfTest;
    let out: Float32Array;
    try {
      out = await runner.runRaw(Float32Array.from(input), 1);
    } catch (err) {
      const reason = err instanceof InferenceError && err.code === 'input_size' ? 'input_mismatch' : 'self_test_failed';
      throw new ActivationError(reason, `self-test run failed: ${(err as Error).message}`, { cause: err });
    }
    if (out.length !== expected.length) {
      throw new ActivationError('self_test_failed', `self-test produced ${out.length} values, expected ${expected.length}`);
    }
    let worst = 0;
    let at = -1;
    for (let i = 0; i < out.length; i++) {
      const d = Math.abs(out[i]! - expected[i]!);
      // `!(d <= tolerance)` also catches NaN.
      if (!(d <= tolerance)) throw new ActivationError('self_test_failed', `self-test output ${i} is ${out[i]}, expected ${expected[i]} ± ${tolerance}`);
      if (d > worst) [worst, at] = [d, i];
    }
    this.log.debug({ worst, at, tolerance }, 'self-test passed');
  }

  async predict(batch: Float32Array, n: number): Promise<Prediction> {
    const slot = this.active;
    if (!slot) throw new NoModelError();
    slot.refs++;
    const t0 = performance.now();
    let probs: Float32Array;
    try {
      probs = await slot.runner.run(batch, n);
    } catch (err) {
      const e = err instanceof InferenceError ? err : new InferenceError('inference_failed', (err as Error).message, { cause: err });
      // A wrong-sized batch is the caller's problem, not the model's: it does not count against its health.
      if (e.code !== 'input_size') this.observe({ sha256: slot.sha256, n, ok: false, nonFinite: false, latencyMs: performance.now() - t0 });
      throw e;
    } finally {
      slot.refs--;
      if (slot.retired && slot.refs === 0) this.releaseSlot(slot);
    }
    const latencyMs = performance.now() - t0;
    let finite = true;
    for (let i = 0; i < probs.length; i++) {
      // x - x is 0 for finite x and NaN for NaN/±Inf.
      if (probs[i]! - probs[i]! !== 0) {
        finite = false;
        break;
      }
    }
    this.observe({ sha256: slot.sha256, n, ok: finite, nonFinite: !finite, latencyMs });
    if (!finite) throw new InferenceError('non_finite_output', `model ${slot.manifest.model} release ${slot.manifest.release} produced a non-finite output`);
    return { probs, manifest: slot.manifest, sha256: slot.sha256, latencyMs };
  }

  /** Stops serving and releases every session (waits for in-flight runs to finish first). */
  async dispose(): Promise<void> {
    this.disposed = true;
    await this.activation;
    const a = this.active;
    this.active = undefined;
    if (a) this.retire(a);
    while (this.releasing.size > 0) await Promise.all([...this.releasing]);
  }

  private observe(o: InferenceObservation): void {
    if (this.observer) this.notify('observed', () => this.observer?.observed(o));
  }

  private notify(event: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.log.error({ err }, `edge/runtime/observer ${event} failed`);
    }
  }

  private retire(slot: Slot): void {
    slot.retired = true;
    if (slot.refs === 0) this.releaseSlot(slot);
  }

  private releaseSlot(slot: Slot): void {
    if (slot.freed) return;
    slot.freed = true;
    this.log.debug({ release: slot.manifest.release, sha256: slot.sha256 }, 'releasing session');
    this.releaseRunner(slot.runner);
  }

  private releaseRunner(runner: InferenceRunner): void {
    const p = runner
      .dispose()
      .catch((err: unknown) => this.log.error({ err }, 'edge/runtime/release failed'))
      .finally(() => {
        this.released++;
        this.releasing.delete(p);
      });
    this.releasing.add(p);
  }
}
