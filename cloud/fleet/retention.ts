import { silentLogger, type Logger } from '../../shared/log/index.js';
import type { StoreRegistry } from '../registry/open.js';
import { pruneDeviceEvents } from './events-store.js';
import { pruneTelemetryHistory } from './telemetry-history.js';

export interface ConsoleRetentionOptions {
  registry: StoreRegistry;
  log?: Logger;
  /** Device events older than this are deleted; default 90 days (cloud.json `console.eventRetentionDays`). */
  eventRetentionDays?: number;
  /** How often retention runs; default 10 minutes (and once at start). */
  intervalMs?: number;
  now?: () => Date;
}

/**
 * Background retention of the console's data (issue 12): device events past `eventRetentionDays`,
 * telemetry buckets past their resolution's window (cloud/fleet/telemetry-history.ts). Deletes run in
 * batches; each pass logs what it deleted. Returns the stopper.
 *
 * @example
 * const stop = startConsoleRetention({ registry, log });
 */
export function startConsoleRetention(o: ConsoleRetentionOptions): { stop: () => void; runOnce: () => Promise<{ events: number; telemetry: number }> } {
  const log = o.log ?? silentLogger;
  const now = o.now ?? (() => new Date());
  const days = o.eventRetentionDays ?? 90;
  let running: Promise<unknown> | undefined;
  const runOnce = async (): Promise<{ events: number; telemetry: number }> => {
    const at = now();
    const events = await pruneDeviceEvents(o.registry, new Date(at.getTime() - days * 86400_000));
    const telemetry = await pruneTelemetryHistory(o.registry, at);
    if (events || telemetry) log.info({ events, telemetry, eventRetentionDays: days }, 'fleet/console-retention');
    return { events, telemetry };
  };
  const tick = (): void => {
    if (running) return;
    running = runOnce()
      .catch((err: unknown) => log.error({ err }, 'fleet/console-retention-failed'))
      .finally(() => (running = undefined));
  };
  const timer = setInterval(tick, o.intervalMs ?? 600_000);
  timer.unref();
  tick();
  return { stop: () => clearInterval(timer), runOnce };
}
