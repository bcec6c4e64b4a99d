/**
 * What the console reads and records beyond the JSON API: the fleet views of cloud/fleet (device query,
 * summary, events, telemetry history) and the audit log (cloud/audit). Injected (createCloudApi wires the
 * registry-backed stores) so the pages depend on shapes, not on SQL.
 */
import type { DeviceListItem, DeviceQuery, FleetSummary } from '../fleet/device-query.js';
import type { DeviceEventView } from '../fleet/events-store.js';
import type { RolloutProgress } from '../fleet/rollout-progress.js';
import type { Point } from '../fleet/telemetry-history.js';
import type { AuditEntry } from '../audit/store.js';

// The stores' own shapes, under the names the pages use (one definition each, in cloud/fleet and cloud/audit).
export type AttentionSummary = FleetSummary;
export type DeviceItem = DeviceListItem;
export type DeviceQueryInput = DeviceQuery;
export type EventItem = DeviceEventView;
export type TelemetryPoint = Point;
export type AuditItem = AuditEntry;
export type RolloutLiveView = RolloutProgress;

export interface ConsoleData {
  /** May be a few seconds old (cached, shared by every tab); `at` says when it was computed. */
  fleetSummary(): Promise<AttentionSummary>;
  /** Drops cached aggregates: the API calls it after every successful change. */
  invalidate(): void;
  queryDevices(q: DeviceQueryInput): Promise<{ devices: DeviceItem[]; nextCursor: string | null; total: number }>;
  deviceEvents(deviceId: string, limit: number): Promise<EventItem[]>;
  telemetry(deviceId: string, resolution: '1m' | '1h'): Promise<TelemetryPoint[]>;
  /** A rollout's counts per wave and state and one bounded page of its devices (the live view). */
  rolloutProgress(id: string, deviceLimit: number): Promise<RolloutLiveView | undefined>;
  recordAudit(e: { actor: string; action: string; target?: string | null; detail?: Record<string, unknown> | null }): Promise<unknown>;
  listAudit(o: { limit: number; before?: number }): Promise<AuditItem[]>;
}

