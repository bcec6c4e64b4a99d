import { InferenceError } from './errors.js';
import type { Prediction, Predictor } from './host.js';

export interface MicroBatcherOptions {
  /** Usually the `ModelHost`. */
  predictor: Predictor;
  /** Examples per ORT run; a full batch runs at once. */
  maxBatch?: number;
  /**
   * How long the first queued example waits for company. 0 = until the end of the current event-loop
   * turn (setImmediate): coalesces requests that arrived together without adding a timer's latency.
   */
  maxWaitMs?: number;
}

interface Pending {
  data: Float32Array;
  n: number;
  resolve: (p: Prediction) => void;
  reject: (err: unknown) => void;
}

/**
 * Coalesces concurrent small `predict` calls into one ORT run with a bounded wait. ORT's per-run cost
 * (tensor wrapping, the native call, output allocation) is then paid once per batch instead of once per
 * request. Each caller gets its own rows of the result (a view, no copy). Whether it helps is measured
 * in test/bench/edge.bench.ts; the API enables it only when configured.
 *
 * @example
 * const batcher = new MicroBatcher({ predictor: host, maxBatch: 32, maxWaitMs: 0 });
 * const { probs } = await batcher.predict(oneExample, 1);
 */
export class MicroBatcher implements Predictor {
  private queue: Pending[] = [];
  private queued = 0;
  private immediate: NodeJS.Immediate | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly predictor: Predictor;
  private readonly maxBatch: number;
  private readonly maxWaitMs: number;
  /** Batches run and examples in them, for the bench and metrics. */
  readonly stats = { batches: 0, examples: 0 };

  constructor({ predictor, maxBatch = 32, maxWaitMs = 0 }: MicroBatcherOptions) {
    if (!Number.isInteger(maxBatch) || maxBatch < 1) throw new RangeError(`maxBatch must be a positive integer, got ${maxBatch}`);
    if (!(maxWaitMs >= 0)) throw new RangeError(`maxWaitMs must be ≥ 0, got ${maxWaitMs}`);
    this.predictor = predictor;
    this.maxBatch = maxBatch;
    this.maxWaitMs = maxWaitMs;
  }

  predict(data: Float32Array, n: number): Promise<Prediction> {
    // Big requests are batches already: nothing to gain from waiting.
    if (n >= this.maxBatch) return this.predictor.predict(data, n);
    return new Promise<Prediction>((resolve, reject) => {
      this.queue.push({ data, n, resolve, reject });
      this.queued += n;
      if (this.queued >= this.maxBatch) this.flush();
      else if (!this.immediate && !this.timer) {
        if (this.maxWaitMs === 0) this.immediate = setImmediate(() => this.flush());
        else this.timer = setTimeout(() => this.flush(), this.maxWaitMs);
      }
    });
  }

  /** Runs whatever is queued now. */
  flush(): void {
    // Each handle goes to its own clear function: clearImmediate() on a Timeout corrupts Node's immediate queue.
    if (this.immediate) clearImmediate(this.immediate);
    if (this.timer) clearTimeout(this.timer);
    this.immediate = undefined;
    this.timer = undefined;
    const items = this.queue;
    if (items.length === 0) return;
    this.queue = [];
    this.queued = 0;
    this.stats.batches++;
    if (items.length === 1) {
      const only = items[0]!;
      this.stats.examples += only.n;
      this.predictor.predict(only.data, only.n).then(only.resolve, only.reject);
      return;
    }
    // Rows of different widths (a swap to a model with another input size between enqueue and flush)
    // cannot share a tensor: run those on their own.
    const width = items[0]!.data.length / items[0]!.n;
    const same: Pending[] = [];
    for (const it of items) {
      if (it.data.length === it.n * width) same.push(it);
      else this.predictor.predict(it.data, it.n).then(it.resolve, it.reject);
    }
    void this.runBatch(same, width);
  }

  private async runBatch(items: Pending[], width: number): Promise<void> {
    let total = 0;
    for (const it of items) total += it.n;
    this.stats.examples += total;
    const all = new Float32Array(total * width);
    let off = 0;
    for (const it of items) {
      all.set(it.data, off);
      off += it.data.length;
    }
    let result: Prediction;
    try {
      result = await this.predictor.predict(all, total);
    } catch (err) {
      if (err instanceof InferenceError && err.code === 'non_finite_output') {
        // One caller's example may have made the model emit NaN: rerun each alone, so only it fails.
        for (const it of items) this.predictor.predict(it.data, it.n).then(it.resolve, it.reject);
        return;
      }
      for (const it of items) it.reject(err);
      return;
    }
    const classes = result.probs.length / total;
    let row = 0;
    for (const it of items) {
      it.resolve({ ...result, probs: result.probs.subarray(row * classes, (row + it.n) * classes) });
      row += it.n;
    }
  }

  /** Runs anything still queued; the batcher stays usable. */
  dispose(): void {
    this.flush();
  }
}
