import { createHash } from 'node:crypto';

/**
 * "At most `limit` admissions in any sliding window of `windowMs`", exactly. Keeps the times of the
 * last `limit` admissions in a ring buffer (memory = 8 bytes × limit, bounded by the config schema),
 * so a check is O(1). Chosen over a token bucket because it is what a user reading "30 per minute"
 * expects: a token bucket of 30/min lets up to 60 through in some 60 s windows.
 *
 * Check and record are separate so that several caps can be checked before any is charged.
 */
export class SlidingWindowCap {
  private readonly times: Float64Array;
  private head = 0; // index of the oldest entry once full
  private size = 0;

  constructor(
    readonly limit: number,
    readonly windowMs: number,
  ) {
    this.times = new Float64Array(Math.max(limit, 0));
  }

  /** True when one more admission at `now` stays within the cap. */
  allows(now: number): boolean {
    if (this.limit <= 0) return false;
    if (this.size < this.limit) return true;
    return this.times[this.head]! <= now - this.windowMs;
  }

  record(now: number): void {
    if (this.limit <= 0) return;
    if (this.size < this.limit) {
      this.times[(this.head + this.size) % this.limit] = now;
      this.size++;
    } else {
      this.times[this.head] = now;
      this.head = (this.head + 1) % this.limit;
    }
  }
}

/**
 * Remembers hashes of selected inputs for `windowMs`, at most `maxEntries` of them (oldest forgotten
 * first). A Map keeps insertion order; with a monotonic clock and re-insertion on re-selection, that
 * is also expiry order, so pruning only ever looks at the front.
 */
export class DedupeWindow {
  private readonly seen = new Map<string, number>();

  constructor(
    readonly windowMs: number,
    readonly maxEntries: number,
    readonly algorithm: 'sha1' | 'sha256',
  ) {}

  /** Digest of the raw float32 bytes (platform byte order; every supported target is little-endian). */
  hash(input: Float32Array): string {
    return createHash(this.algorithm).update(new Uint8Array(input.buffer, input.byteOffset, input.byteLength)).digest('base64');
  }

  has(hash: string, now: number): boolean {
    this.prune(now);
    return this.seen.has(hash);
  }

  add(hash: string, now: number): void {
    this.seen.delete(hash);
    this.seen.set(hash, now);
    while (this.seen.size > this.maxEntries) {
      const oldest = this.seen.keys().next();
      if (oldest.done) break;
      this.seen.delete(oldest.value);
    }
  }

  get size(): number {
    return this.seen.size;
  }

  private prune(now: number): void {
    for (const [hash, at] of this.seen) {
      if (at > now - this.windowMs) break;
      this.seen.delete(hash);
    }
  }
}
