import { and, desc, eq, inArray, lt } from 'drizzle-orm';
import type { DeviceEvent } from '../../shared/protocol/index.js';
import type { TxDb } from '../registry/db.js';
import type { StoreRegistry } from '../registry/open.js';
import type { DeviceEventRow } from '../registry/schema.js';
import { q, type Tables } from '../registry/tx.js';

/** One event to record: a device's own (`source: 'device'`) or a cloud component's note about a device. */
export interface DeviceEventInput {
  deviceId: string;
  /** When it happened (the device's clock for device events), ISO-8601. */
  at: string;
  /** installed | rejected | rolled_back | committed for device events; a component's own type otherwise. */
  type: string;
  /** `device` (default) or the cloud component that writes it (e.g. `rollout`, `scale-out`). */
  source?: string;
  model?: string | null;
  release?: number | null;
  sha256?: string | null;
  reason?: string | null;
  detail?: string | null;
}

/** An event as the API and the console show it. */
export interface DeviceEventView {
  id: number;
  deviceId: string;
  at: string;
  receivedAt: string;
  source: string;
  type: string;
  model: string | null;
  release: number | null;
  sha256: string | null;
  reason: string | null;
  detail: string | null;
}

export interface ListDeviceEventsOptions {
  deviceId?: string;
  /** At most this many, newest first. */
  limit: number;
  /** Only events with an id below this one (the previous page's last id). */
  before?: number;
}

/** Longest `detail` kept (the protocol caps device details at 1,024 characters too). */
export const MAX_EVENT_DETAIL = 1024;

function toView(r: DeviceEventRow): DeviceEventView {
  return { id: r.id, deviceId: r.deviceId, at: r.at, receivedAt: r.receivedAt, source: r.source, type: r.type, model: r.model, release: r.release, sha256: r.sha256, reason: r.reason, detail: r.detail };
}

/** A device's own event (devices/{id}/events) as a row to record. */
export function deviceEventInput(ev: DeviceEvent): DeviceEventInput {
  // An `agent_*` event (issue 14) keeps its agent part in reason and detail (model/release name the running model).
  const agent = ev.agent ? `agent ${ev.agent.version} (agentSeq ${ev.agent.agentSeq ?? 'unknown'}), running ${ev.agent.running}` : undefined;
  const detail = agent ? (ev.detail ? `${agent}: ${ev.detail}` : agent).slice(0, 1024) : (ev.detail ?? null);
  return { deviceId: ev.deviceId, at: ev.at, type: ev.type, source: 'device', model: ev.model, release: ev.release, sha256: ev.sha256, reason: ev.agent?.reason ?? ev.reason ?? null, detail };
}

/**
 * Records events as a transaction body's steps (cloud/registry/tx.ts), so an event and its rollout effect
 * commit together. A `rolled_back` device event marks the device as needing attention
 * (`devices.rolled_back_at`) until its next `installed` or `committed` event. Returns how many were recorded.
 */
export function* deviceEventSteps(tx: TxDb, t: Tables, rows: readonly DeviceEventInput[], now: Date = new Date()) {
  if (rows.length === 0) return 0;
  const receivedAt = now.toISOString();
  yield* q(
    tx.insert(t.deviceEvents).values(
      rows.map((r) => ({
        deviceId: r.deviceId,
        at: r.at,
        receivedAt,
        source: r.source ?? 'device',
        type: r.type,
        model: r.model ?? null,
        release: r.release ?? null,
        sha256: r.sha256 ?? null,
        reason: r.reason ?? null,
        detail: r.detail == null ? null : r.detail.slice(0, MAX_EVENT_DETAIL),
      })),
    ),
  );
  for (const r of rows) {
    if ((r.source ?? 'device') !== 'device') continue;
    if (r.type === 'rolled_back') yield* q(tx.update(t.devices).set({ rolledBackAt: r.at }).where(eq(t.devices.id, r.deviceId)));
    else if (r.type === 'installed' || r.type === 'committed') yield* q(tx.update(t.devices).set({ rolledBackAt: null }).where(eq(t.devices.id, r.deviceId)));
  }
  return rows.length;
}

/**
 * The one store of device events (issue 12): ingest writes every device event here, the rollout engine
 * and scale-out may add their own (`source`). Returns how many were recorded.
 *
 * @example
 * await recordDeviceEvents(registry, [{ deviceId: 'pi-1', at: ev.at, type: 'installed', release: 7 }]);
 */
export async function recordDeviceEvents(reg: StoreRegistry, rows: readonly DeviceEventInput[], now: Date = new Date()): Promise<number> {
  return reg.tx((tx, t) => deviceEventSteps(tx, t, rows, now));
}

/** Events newest first, of one device or all; page with `before` = the last id of the previous page. */
export async function listDeviceEvents(reg: StoreRegistry, o: ListDeviceEventsOptions): Promise<DeviceEventView[]> {
  const { deviceEvents } = reg.t;
  const where = and(o.deviceId === undefined ? undefined : eq(deviceEvents.deviceId, o.deviceId), o.before === undefined ? undefined : lt(deviceEvents.id, o.before));
  const rows = await reg.q.select().from(deviceEvents).where(where).orderBy(desc(deviceEvents.id)).limit(o.limit);
  return rows.map(toView);
}

/**
 * Deletes events received before `cutoff`, `batch` rows per statement so a long backlog never holds the
 * write lock for long. Returns how many were deleted.
 */
export async function pruneDeviceEvents(reg: StoreRegistry, cutoff: Date, batch = 2_000): Promise<number> {
  const { deviceEvents } = reg.t;
  let total = 0;
  for (;;) {
    const ids = (await reg.q.select({ id: deviceEvents.id }).from(deviceEvents).where(lt(deviceEvents.receivedAt, cutoff.toISOString())).limit(batch)).map((r) => r.id);
    if (ids.length === 0) return total;
    // A transaction, so the leader's fenced registry (console retention, issue 15) refuses it after a takeover.
    await reg.tx((tx, t) => q(tx.delete(t.deviceEvents).where(inArray(t.deviceEvents.id, ids))));
    total += ids.length;
    if (ids.length < batch) return total;
    // Let the event loop (and ingest's writes) in between batches.
    await new Promise((r) => setImmediate(r));
  }
}
