import type { MqttClient } from 'mqtt';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import { PROTOCOL_VERSION, assertPublishable, encodePayload, telemetrySchema, topics, type ShadowTelemetry, type Telemetry } from '../../shared/protocol/index.js';
import type { OutboxStats } from '../outbox/index.js';
import type { InferenceObservation } from '../runtime/index.js';
import type { RunningRelease } from './status.js';
import { percentileOfSorted } from '../../shared/util/percentile.js';

export interface InferenceStatsOptions {
  /** Runs kept for the percentiles (a ring buffer). */
  capacity?: number;
  /** Runs older than this no longer count (a quiet device must not report last week's latency). */
  maxAgeMs?: number;
  /** Monotonic milliseconds. */
  now?: () => number;
}

/**
 * Counts inference runs and keeps a rolling window of their latency, fed by the model host's observer
 * (the same feed as the health gate). `requests`/`errors` are totals since start (counters: the cloud
 * takes differences); the percentiles and `recentErrors` cover the window only.
 */
export class InferenceStats {
  requests = 0;
  errors = 0;
  private readonly at: Float64Array;
  private readonly ms: Float64Array;
  private readonly ok: Uint8Array;
  private next = 0;
  private size = 0;
  private readonly maxAgeMs: number;
  private readonly now: () => number;

  constructor({ capacity = 1024, maxAgeMs = 5 * 60_000, now = () => performance.now() }: InferenceStatsOptions = {}) {
    this.at = new Float64Array(capacity);
    this.ms = new Float64Array(capacity);
    this.ok = new Uint8Array(capacity);
    this.maxAgeMs = maxAgeMs;
    this.now = now;
  }

  observed(o: Pick<InferenceObservation, 'ok' | 'latencyMs'>): void {
    this.requests++;
    if (!o.ok) this.errors++;
    this.at[this.next] = this.now();
    this.ms[this.next] = o.latencyMs;
    this.ok[this.next] = o.ok ? 1 : 0;
    this.next = (this.next + 1) % this.at.length;
    this.size = Math.min(this.size + 1, this.at.length);
  }

  /** p50/p95 of successful runs in the window (null when there were none), and failed runs in it. */
  window(): { p50: number | null; p95: number | null; recentErrors: number; recentRuns: number } {
    const since = this.now() - this.maxAgeMs;
    const lat: number[] = [];
    let recentErrors = 0;
    let recentRuns = 0;
    for (let i = 0; i < this.size; i++) {
      if (this.at[i]! < since) continue;
      recentRuns++;
      if (this.ok[i]) lat.push(this.ms[i]!);
      else recentErrors++;
    }
    if (lat.length === 0) return { p50: null, p95: null, recentErrors, recentRuns };
    lat.sort((a, b) => a - b);
    const round = (x: number) => Math.round(x * 1000) / 1000;
    return { p50: round(percentileOfSorted(lat, 50)), p95: round(percentileOfSorted(lat, 95)), recentErrors, recentRuns };
  }
}

export interface TelemetrySources {
  deviceId: string;
  running: () => RunningRelease | null;
  stats: InferenceStats;
  outbox: () => OutboxStats;
  health: () => Telemetry['health'];
  /** Epoch ms of the daemon's start. */
  startedAt: number;
  now?: () => Date;
  /** The shadow candidate's figures (issue 13), only when the cloud accepts `telemetry.shadow`. */
  shadow?: () => ShadowTelemetry | undefined;
}

/** One heartbeat, validated against `telemetrySchema` when encoded. */
export function buildTelemetry(s: TelemetrySources): Telemetry {
  const now = s.now?.() ?? new Date();
  const running = s.running();
  const w = s.stats.window();
  const o = s.outbox();
  const shadow = s.shadow?.();
  return {
    v: PROTOCOL_VERSION,
    deviceId: s.deviceId,
    at: now.toISOString(),
    model: running?.model ?? null,
    release: running?.release ?? null,
    uptimeSeconds: Math.max(0, Math.round((now.getTime() - s.startedAt) / 1000)),
    requests: s.stats.requests,
    errors: s.stats.errors,
    latencyMs: { p50: w.p50, p95: w.p95 },
    rssBytes: process.memoryUsage.rss(),
    // Exactly the outbox's own numbers (telemetrySchema.outbox is OutboxStats).
    outbox: { depth: o.depth, bytes: o.bytes, dropped: o.dropped, evicted: o.evicted, selected: o.selected, published: o.published },
    health: s.health(),
    ...(shadow ? { shadow } : {}),
  };
}

export interface TelemetryPublisherDeps {
  client: Pick<MqttClient, 'connected' | 'publish'>;
  deviceId: string;
  intervalMs: number;
  collect: () => Telemetry;
  log?: Logger;
}

/**
 * Publishes a heartbeat on `devices/{id}/telemetry` every `intervalMs` (QoS 0, not retained). Skipped
 * while disconnected: a heartbeat is worth nothing late, and MQTT.js would queue it in memory.
 */
export class TelemetryPublisher {
  private timer: NodeJS.Timeout | undefined;
  private readonly topic: string;
  private readonly log: Logger;

  constructor(private readonly deps: TelemetryPublisherDeps) {
    this.topic = assertPublishable(topics.telemetry(deps.deviceId));
    this.log = deps.log ?? silentLogger;
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.publishNow(), this.deps.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Sends one heartbeat now; false when not connected or when it could not be built. */
  publishNow(): boolean {
    try {
      if (!this.deps.client.connected) return false;
      const payload = encodePayload(telemetrySchema, this.deps.collect());
      this.deps.client.publish(this.topic, payload, { qos: 0, retain: false });
      return true;
    } catch (err) {
      this.log.error({ err }, 'telemetry/publish');
      return false;
    }
  }
}
