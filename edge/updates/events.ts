import type { Logger } from '../../shared/log/index.js';
import { PROTOCOL_VERSION, type DeviceEvent, type Manifest } from '../../shared/protocol/index.js';
import type { EmitEvent, RejectReason, RollbackReason } from './types.js';

const MAX_DETAIL = 1024;

export interface EventContext {
  deviceId: string;
  now: () => Date;
  emit: EmitEvent;
  log: Logger;
}

/** Builds a protocol event about `manifest` (null fields when the manifest could not be trusted). */
export function deviceEvent(
  ctx: Pick<EventContext, 'deviceId' | 'now'>,
  type: DeviceEvent['type'],
  manifest: Manifest | null,
  extra: { reason?: RejectReason | RollbackReason; detail?: string; sha256?: string } = {},
): DeviceEvent {
  const ev: DeviceEvent = {
    v: PROTOCOL_VERSION,
    deviceId: ctx.deviceId,
    at: ctx.now().toISOString(),
    type,
    model: manifest?.model ?? null,
    release: manifest?.release ?? null,
    sha256: extra.sha256 ?? manifest?.artifact.sha256 ?? null,
  };
  if (extra.reason) ev.reason = extra.reason;
  if (extra.detail) ev.detail = extra.detail.length > MAX_DETAIL ? `${extra.detail.slice(0, MAX_DETAIL - 1)}…` : extra.detail;
  return ev;
}

/** Hands an event to the daemon without letting a failing publisher break the update pipeline. */
export function emitSafely(ctx: EventContext, ev: DeviceEvent): void {
  const fail = (err: unknown): void => ctx.log.error({ err, event: ev.type }, 'updates/emit-failed');
  try {
    const r = ctx.emit(ev);
    if (r && typeof (r as Promise<void>).then === 'function') (r as Promise<void>).catch(fail);
  } catch (err) {
    fail(err);
  }
}
