import type { Manifest } from '../../shared/protocol/index.js';

export interface RememberedPrediction {
  /** The scaled model input the prediction was made on. */
  input: Float32Array;
  probs: Float32Array;
  manifest: Manifest;
  /** Epoch milliseconds. */
  at: number;
}

export interface RecentPredictionsOptions {
  /** Entries kept at most (MNIST: 10k × 3.1 KiB ≈ 31 MiB). */
  maxEntries?: number;
  /** Bytes of inputs + probabilities kept at most. */
  maxBytes?: number;
  /** Older entries are treated as gone (feedback answers 404). */
  ttlMs?: number;
  clock?: () => number;
}

/**
 * Recent predictions by id, so `/v1/feedback` can attach the input a label is about. Bounded by count,
 * bytes and age; evicts least recently used first (a Map iterates in insertion order; a hit re-inserts).
 */
export class RecentPredictions {
  private readonly map = new Map<string, RememberedPrediction>();
  private bytes = 0;
  private readonly maxEntries: number;
  private readonly maxBytes: number;
  private readonly ttlMs: number;
  private readonly clock: () => number;

  constructor({ maxEntries = 10_000, maxBytes = 64 * 1024 * 1024, ttlMs = 60 * 60 * 1000, clock = Date.now }: RecentPredictionsOptions = {}) {
    this.maxEntries = maxEntries;
    this.maxBytes = maxBytes;
    this.ttlMs = ttlMs;
    this.clock = clock;
  }

  get size(): number {
    return this.map.size;
  }

  get byteSize(): number {
    return this.bytes;
  }

  remember(id: string, entry: RememberedPrediction): void {
    if (this.maxEntries <= 0) return;
    this.delete(id);
    this.map.set(id, entry);
    this.bytes += entry.input.byteLength + entry.probs.byteLength;
    while (this.map.size > this.maxEntries || (this.bytes > this.maxBytes && this.map.size > 0)) {
      const oldest = this.map.keys().next().value as string;
      this.delete(oldest);
    }
  }

  /** The entry, refreshed as most recently used; undefined when unknown, evicted or expired. */
  get(id: string): RememberedPrediction | undefined {
    const e = this.map.get(id);
    if (!e) return undefined;
    if (this.clock() - e.at > this.ttlMs) {
      this.delete(id);
      return undefined;
    }
    this.map.delete(id);
    this.map.set(id, e);
    return e;
  }

  private delete(id: string): void {
    const e = this.map.get(id);
    if (!e) return;
    this.map.delete(id);
    this.bytes -= e.input.byteLength + e.probs.byteLength;
  }
}
