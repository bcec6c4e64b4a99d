import type { EdgeConfig } from './config/index.js';
import type { LocalApiLimits } from './api/context.js';
import type { HealthGateOptions } from './runtime/health.js';
import type { OutboxPublisherOptions } from './outbox/publisher-types.js';
import { publishOverheadBytes } from './outbox/index.js';

/**
 * The daemon's config sections mapped onto its parts' options: pure functions, so `edge/daemon.ts` keeps
 * only the wiring between the parts.
 */

/** The health gate's thresholds (`runtime`); the callbacks are the daemon's. */
export function healthGateOptions(rt: EdgeConfig['runtime']): Omit<HealthGateOptions, 'onUnhealthy' | 'onCommitted' | 'log'> {
  return {
    windowMs: rt.healthWindowSeconds * 1000,
    windowRequests: rt.healthWindowRequests ?? undefined,
    latencyBudgetMs: rt.latencyBudgetMs ?? undefined,
    maxErrorRate: rt.maxErrorRate,
    minErrors: rt.minErrors,
    maxNonFinite: rt.maxNonFinite,
    maxNonFiniteRate: rt.maxNonFiniteRate,
    minRequests: rt.minRequests,
  };
}

/** The local API's bounds (`api`). */
export function localApiLimits(api: EdgeConfig['api']): Partial<LocalApiLimits> {
  return {
    maxBodyBytes: api.maxBodyBytes,
    maxBatch: api.maxBatch,
    rememberPredictions: api.rememberPredictions,
    rememberMs: api.rememberSeconds * 1000,
    feedbackPerMinute: api.feedbackPerMinute,
    maxConcurrent: api.maxConcurrent,
  };
}

/** The outbox publisher's batching and timeouts (`outbox`, `mqtt.maxPacketBytes`). */
export function publisherOptions(config: EdgeConfig): Omit<OutboxPublisherOptions, 'outbox' | 'client' | 'deviceId' | 'log' | 'receipts'> {
  const o = config.outbox;
  return {
    maxBatchExamples: o.batch.maxExamples,
    // A batch must fit one packet too (a single example always does: the outbox refuses bigger ones).
    maxBatchBytes: Math.min(o.batch.maxBytes, config.mqtt.maxPacketBytes - publishOverheadBytes(config.deviceId)),
    ackTimeoutMs: o.ackTimeoutMs,
    backoff: o.backoff,
    receiptTimeoutMs: o.receiptTimeoutMs,
    receiptTimeoutMaxMs: o.receiptTimeoutMaxMs,
    maxInFlight: o.maxInFlight,
    connectJitterMs: o.connectJitterMs,
  };
}
