import { Counter, Registry as PromRegistry } from 'prom-client';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import { MAX_RETRY_AFTER_SECONDS } from '../../shared/protocol/index.js';

/**
 * Per-device ingest rate cap (issue 10 item 5): a token bucket per device, `perMinute` examples a
 * minute with room for a `burst`. Examples over the cap are **deferred**, never refused: the device
 * keeps them in its outbox and sends them again after `retryAfterSeconds`, so an honest device's
 * backlog is delayed, not lost, while a flooding device cannot outrun its rate.
 *
 * Use it as `Ingest`'s `admit` hook: `new Ingest({ ..., admit: quota.admit })`.
 */
export interface IngestQuotaOptions {
  /** Sustained examples per minute per device; 0 turns the cap off. */
  perMinute: number;
  /** Bucket size: examples a device may send at once after a quiet spell (≥ 1). */
  burst: number;
  /** Milliseconds clock (fake timers in tests). */
  now?: () => number;
  log?: Logger;
  metrics?: PromRegistry;
}

interface Bucket {
  tokens: number;
  at: number;
}

export class IngestQuota {
  private readonly buckets = new Map<string, Bucket>();
  private readonly now: () => number;
  private readonly log: Logger;
  private readonly counter: Counter<'result'>;
  /** Devices already warned about in this minute (one log line per device per minute, the counter has every one). */
  private readonly warned = new Map<string, number>();

  constructor(private readonly opts: IngestQuotaOptions) {
    if (!(opts.perMinute >= 0) || !(opts.burst >= 1)) throw new Error(`ingest quota: perMinute must be ≥ 0 and burst ≥ 1 (got ${opts.perMinute}, ${opts.burst})`);
    this.now = opts.now ?? Date.now;
    this.log = opts.log ?? silentLogger;
    const reg = opts.metrics ?? new PromRegistry();
    this.counter =
      (reg.getSingleMetric('apprentice_cloud_ingest_quota_total') as Counter<'result'> | undefined) ??
      new Counter({ name: 'apprentice_cloud_ingest_quota_total', help: 'Examples checked against the per-device ingest rate cap, by result (admitted, deferred)', labelNames: ['result'] as const, registers: [reg] });
  }

  /** Of these example ids, the ones to defer (id → retryAfterSeconds). Bound so it can be passed as a hook. */
  readonly admit = (deviceId: string, ids: readonly string[]): ReadonlyMap<string, number> => {
    const out = new Map<string, number>();
    const { perMinute, burst } = this.opts;
    if (perMinute === 0 || ids.length === 0) return out;
    const now = this.now();
    const perMs = perMinute / 60_000;
    const b = this.buckets.get(deviceId) ?? { tokens: burst, at: now };
    b.tokens = Math.min(burst, b.tokens + Math.max(0, now - b.at) * perMs);
    b.at = now;
    this.buckets.set(deviceId, b);
    let admitted = 0;
    let short = 0;
    for (const id of ids) {
      if (b.tokens >= 1) {
        b.tokens -= 1;
        admitted++;
        continue;
      }
      // The k-th example over the cap can come back once k more tokens have accrued.
      short++;
      const seconds = Math.ceil((short - b.tokens) / perMs / 1000);
      out.set(id, Math.min(MAX_RETRY_AFTER_SECONDS, Math.max(1, seconds)));
    }
    if (admitted) this.counter.inc({ result: 'admitted' }, admitted);
    if (out.size) {
      this.counter.inc({ result: 'deferred' }, out.size);
      const last = this.warned.get(deviceId) ?? -Infinity;
      if (now - last >= 60_000) {
        this.warned.set(deviceId, now);
        this.log.warn({ deviceId, deferred: out.size, perMinute, burst }, 'ingest/rate-cap: examples deferred');
      }
    }
    return out;
  };

  /** Forget a device's bucket (revoked or deleted). */
  forget(deviceId: string): void {
    this.buckets.delete(deviceId);
    this.warned.delete(deviceId);
  }
}
