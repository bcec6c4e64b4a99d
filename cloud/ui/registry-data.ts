import { listAudit, recordAudit } from '../audit/store.js';
import { fleetSummary, queryDevices, type FleetSummary } from '../fleet/device-query.js';
import { listDeviceEvents } from '../fleet/events-store.js';
import { rolloutProgress } from '../fleet/rollout-progress.js';
import { telemetrySeries } from '../fleet/telemetry-history.js';
import type { StoreRegistry } from '../registry/open.js';
import type { ConsoleData } from './data.js';

/**
 * A value computed at most once per `ttlMs` and by one caller at a time: concurrent callers share the
 * computation in flight; `invalidate()` drops it (the API calls it after every successful change).
 *
 * @example
 * const summary = shortCache(() => fleetSummary(reg), 2000);
 * await summary.get();
 */
export function shortCache<T>(load: () => Promise<T>, ttlMs: number, now: () => number = Date.now) {
  let hit: { at: number; value: Promise<T> } | undefined;
  return {
    get(): Promise<T> {
      if (hit && now() - hit.at < ttlMs) return hit.value;
      const entry = { at: now(), value: load() };
      hit = entry;
      // A failed computation is not kept: the next caller tries again.
      entry.value.catch(() => {
        if (hit === entry) hit = undefined;
      });
      return entry.value;
    },
    invalidate(): void {
      hit = undefined;
    },
  };
}

/**
 * The console's data from the registry's stores (cloud/fleet, cloud/audit). The fleet summary (one pass
 * over every device) is shared by all tabs for `summaryTtlMs` (default 2 s): at 10,000 devices the
 * overview then costs one pass per 2 s however many operators look, and its tiles are at most that old.
 */
export function registryConsoleData(reg: StoreRegistry, { summaryTtlMs = 2000 }: { summaryTtlMs?: number } = {}): ConsoleData {
  const summary = shortCache<FleetSummary>(() => fleetSummary(reg), summaryTtlMs);
  return {
    fleetSummary: () => summary.get(),
    invalidate: () => summary.invalidate(),
    queryDevices: (q) => queryDevices(reg, q),
    deviceEvents: (deviceId, limit) => listDeviceEvents(reg, { deviceId, limit }),
    telemetry: (deviceId, resolution) => telemetrySeries(reg, deviceId, { resolution }),
    rolloutProgress: (id, deviceLimit) => rolloutProgress(reg, id, { deviceLimit }),
    recordAudit: (e) => recordAudit(reg, e),
    listAudit: (o) => listAudit(reg, o),
  };
}
