export interface ReceiptTimeoutOptions {
  /** The first wait for a receipt, before anything was observed. */
  baseMs: number;
  /** The wait never grows past this. */
  maxMs: number;
  /** The wait is at least this many times the observed receipt latency. Default 3. */
  latencyFactor?: number;
  /** Uniform in [0, 1), for the jitter. */
  random?: () => number;
  /** Rows whose resend count is remembered, at most (the oldest are forgotten). Default 10,000. */
  maxTrackedRows?: number;
}

/**
 * How long a batch waits for its receipt before its rows go again (issue 9 overflow drill: a fixed 60 s
 * timeout resent every batch still queued behind a cloud that was draining a 60 s backlog, and the
 * duplicates kept the queue full). The wait for a batch is
 *
 *   min(maxMs, max(baseMs, latencyFactor × observed latency) × 2^resends) × jitter in [1, 1.5)
 *
 * - `resends` is the most times any of its rows already timed out: each resend of the same rows waits
 *   twice as long (exponential backoff per row, not per device), so an outage costs a few duplicates,
 *   not one per timeout.
 * - the observed latency is send → receipt. It rises at once to a slow sample and decays slowly, so
 *   after an outage the device waits about as long as the cloud's backlog takes to drain: a batch is not
 *   sent again while its previous send is plausibly still queued.
 * - the jitter (never below the wait) keeps devices that sent together from resending together.
 */
export class ReceiptTimeouts {
  private readonly baseMs: number;
  private readonly maxMs: number;
  private readonly latencyFactor: number;
  private readonly random: () => number;
  private readonly maxTracked: number;
  private latency = 0;
  /** Row id → times its batch timed out. */
  private readonly resends = new Map<string, number>();

  constructor({ baseMs, maxMs, latencyFactor = 3, random = Math.random, maxTrackedRows = 10_000 }: ReceiptTimeoutOptions) {
    this.baseMs = baseMs;
    this.maxMs = Math.max(maxMs, baseMs);
    this.latencyFactor = latencyFactor;
    this.random = random;
    this.maxTracked = maxTrackedRows;
  }

  /** The estimated send → receipt time (0 before any receipt). */
  get latencyMs(): number {
    return this.latency;
  }

  /** A receipt came `ms` after its batch was sent. */
  observe(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) return;
    this.latency = ms >= this.latency ? ms : this.latency * 0.9 + ms * 0.1;
  }

  /** The wait for a batch of these rows, without jitter (the timer adds it once, at send). */
  waitMs(ids: Iterable<string>): number {
    let n = 0;
    for (const id of ids) n = Math.max(n, this.resends.get(id) ?? 0);
    const floor = Math.max(this.baseMs, this.latencyFactor * this.latency);
    return Math.min(this.maxMs, floor * 2 ** Math.min(n, 30));
  }

  /** A multiplier in [1, 1.5), drawn once per batch. */
  jitter(): number {
    return 1 + this.random() / 2;
  }

  /** The batch of these rows got no receipt in time: their next wait doubles. */
  timedOut(ids: Iterable<string>): void {
    for (const id of ids) {
      const n = (this.resends.get(id) ?? 0) + 1;
      this.resends.delete(id); // re-insert: the map's order is the forgetting order
      this.resends.set(id, n);
    }
    for (const id of this.resends.keys()) {
      if (this.resends.size <= this.maxTracked) break;
      this.resends.delete(id);
    }
  }

  /** The rows are settled (receipted): forget them. */
  settled(ids: Iterable<string>): void {
    for (const id of ids) this.resends.delete(id);
  }

  /** Rows whose resend count is remembered. */
  get tracked(): number {
    return this.resends.size;
  }
}
