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
  /** Entries kept at most (MNIST: 10k × 3.2 KiB ≈ 31 MiB). */
  maxEntries?: number;
  /** Bytes of inputs + probabilities kept at most (caps the entries for big inputs). */
  maxBytes?: number;
  /** Older entries are treated as gone (feedback answers 404). */
  ttlMs?: number;
  clock?: () => number;
}

/**
 * Recent predictions by id, so `/v1/feedback` can attach the input a label is about. Bounded by count,
 * bytes and age; the oldest prediction is evicted first.
 *
 * Inputs and probabilities live in one preallocated ring of float32 rows rather than one small
 * Float32Array per prediction: keeping 10k ArrayBuffers alive and churning through them cost ~25 µs of
 * GC per request in the edge bench (a sixth of the request budget). `get` copies the rows out.
 * A ring is sized for one input width; when a model with another input size arrives, it starts afresh.
 */
export class RecentPredictions {
  private readonly index = new Map<string, number>();
  private ids: (string | undefined)[] = [];
  private manifests: (Manifest | undefined)[] = [];
  private ats = new Float64Array(0);
  private inputs = new Float32Array(0);
  private probs = new Float32Array(0);
  private width = -1;
  private classes = -1;
  private capacity = 0;
  private next = 0;
  private readonly maxEntries: number;
  private readonly maxBytes: number;
  private readonly ttlMs: number;
  private readonly clock: () => number;

  constructor({ maxEntries = 10_000, maxBytes = 64 * 1024 * 1024, ttlMs = 60 * 60 * 1000, clock = Date.now }: RecentPredictionsOptions = {}) {
    this.maxEntries = Math.max(0, Math.floor(maxEntries));
    this.maxBytes = maxBytes;
    this.ttlMs = ttlMs;
    this.clock = clock;
  }

  get size(): number {
    return this.index.size;
  }

  /** Bytes held by the ring (allocated once per input width). */
  get byteSize(): number {
    return this.inputs.byteLength + this.probs.byteLength;
  }

  private reset(width: number, classes: number): void {
    this.width = width;
    this.classes = classes;
    this.capacity = Math.min(this.maxEntries, Math.floor(this.maxBytes / ((width + classes) * 4)));
    this.index.clear();
    this.ids = new Array<string | undefined>(this.capacity);
    this.manifests = new Array<Manifest | undefined>(this.capacity);
    this.ats = new Float64Array(this.capacity);
    // Zero-filled and mapped lazily by the OS: RSS grows only as the ring fills.
    this.inputs = new Float32Array(this.capacity * width);
    this.probs = new Float32Array(this.capacity * classes);
    this.next = 0;
  }

  remember(id: string, { input, probs, manifest, at }: RememberedPrediction): void {
    if (input.length !== this.width || probs.length !== this.classes) this.reset(input.length, probs.length);
    if (this.capacity === 0) return;
    const slot = this.next;
    this.next = slot + 1 === this.capacity ? 0 : slot + 1;
    const evicted = this.ids[slot];
    if (evicted !== undefined) this.index.delete(evicted);
    const old = this.index.get(id);
    if (old !== undefined) this.ids[old] = undefined;
    this.inputs.set(input, slot * this.width);
    this.probs.set(probs, slot * this.classes);
    this.ids[slot] = id;
    this.manifests[slot] = manifest;
    this.ats[slot] = at;
    this.index.set(id, slot);
  }

  /** A copy of the entry; undefined when unknown, evicted or expired. */
  get(id: string): RememberedPrediction | undefined {
    const slot = this.index.get(id);
    if (slot === undefined) return undefined;
    const at = this.ats[slot]!;
    if (this.clock() - at > this.ttlMs) {
      this.index.delete(id);
      this.ids[slot] = undefined;
      this.manifests[slot] = undefined;
      return undefined;
    }
    return {
      input: this.inputs.slice(slot * this.width, (slot + 1) * this.width),
      probs: this.probs.slice(slot * this.classes, (slot + 1) * this.classes),
      manifest: this.manifests[slot]!,
      at,
    };
  }
}
