import type { MqttClient } from 'mqtt';
import { Counter, type Registry } from 'prom-client';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import { eventForCloud, eventNeedsCloudInfo, type CloudInfo, type DeviceEvent } from '../../shared/protocol/index.js';

/** How long after the first connect an event with a newer reason waits for the cloud's retained info. */
export const CLOUD_INFO_WAIT_MS = 10_000;
/** Events held at most while the cloud info is unknown; past it they go out with older reasons at once. */
export const MAX_HELD_EVENTS = 256;

export interface EventGateDeps {
  client: MqttClient;
  /** The cloud's info as now known (CloudInfoWatcher.current); undefined = none (yet). */
  info: () => CloudInfo | undefined;
  /** Publishes an event as given (already fit for the cloud). */
  send: (ev: DeviceEvent) => void;
  waitMs?: number;
  maxHeld?: number;
  metrics?: Registry;
  log?: Logger;
}

/**
 * Sends device events in a form the cloud can read (issue 10, compatibility). A reason newer than
 * protocol 1 (`sequence_jump`, `crash_loop`, ...; shared/protocol/compat.ts NEWER_EVENT_REASONS) is
 * refused by an older cloud's strict event schema, so until the cloud's retained info is known the
 * gate holds such an event (and every event after it, to keep their order). It lets them go when the
 * info arrives (each reason as the cloud accepts it, or mapped to its older reason), or `waitMs` after
 * the first connect with no info (an older cloud that never publishes one: older reasons). Once
 * settled, events pass at once, mapped by the info known then.
 *
 * @example
 * const gate = new EventGate({ client, info: () => watcher.current, send: publishEvent });
 * gate.start();            // before client.connect()
 * watcher onChange → gate.cloudInfoChanged();
 * gate.emit(event);
 */
export class EventGate {
  private held: DeviceEvent[] = [];
  private settled = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly log: Logger;
  private readonly mapped: Counter<'reason'> | undefined;

  constructor(private readonly deps: EventGateDeps) {
    this.log = deps.log ?? silentLogger;
    const reg = deps.metrics;
    this.mapped = reg
      ? ((reg.getSingleMetric('apprentice_edge_events_reason_mapped_total') as Counter<'reason'> | undefined) ??
        new Counter({ name: 'apprentice_edge_events_reason_mapped_total', help: 'Device events sent with an older reason because the cloud does not accept the newer one, by newer reason', labelNames: ['reason'] as const, registers: [reg] }))
      : undefined;
  }

  start(): void {
    this.deps.client.on('connect', this.onConnect);
    if (this.deps.client.connected) this.onConnect();
  }

  /** Sends what is held with the info now known (the daemon's stop; nothing is kept back for ever). */
  stop(): void {
    this.deps.client.removeListener('connect', this.onConnect);
    if (!this.settled) this.settle('stopping');
  }

  /** Events waiting for the cloud info. */
  get pending(): number {
    return this.held.length;
  }

  emit(ev: DeviceEvent): void {
    if (!this.settled && this.deps.info() !== undefined) this.settle('cloud info');
    if (this.settled) return this.send(ev);
    if (this.held.length === 0 && !eventNeedsCloudInfo(ev)) return this.send(ev);
    this.held.push(ev);
    this.log.info({ type: ev.type, reason: ev.reason, held: this.held.length }, 'events/held-for-cloud-info');
    if (this.held.length >= (this.deps.maxHeld ?? MAX_HELD_EVENTS)) this.settle('held events bound');
  }

  /** The cloud info arrived or changed. */
  cloudInfoChanged(): void {
    if (!this.settled && this.deps.info() !== undefined) this.settle('cloud info');
  }

  private readonly onConnect = (): void => {
    if (this.settled || this.timer) return;
    this.timer = setTimeout(() => this.settle('no cloud info: an older cloud'), this.deps.waitMs ?? CLOUD_INFO_WAIT_MS);
    this.timer.unref?.();
  };

  private settle(why: string): void {
    this.settled = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    const held = this.held;
    this.held = [];
    if (held.length) this.log.info({ why, events: held.length, protocolVersion: this.deps.info()?.protocolVersion ?? 1 }, 'events/released');
    for (const ev of held) this.send(ev);
  }

  private send(ev: DeviceEvent): void {
    const out = eventForCloud(ev, this.deps.info());
    if (out.reason !== ev.reason) {
      this.mapped?.inc({ reason: ev.reason ?? 'none' });
      this.log.warn({ reason: ev.reason, sent: out.reason }, 'events/reason-mapped: the cloud does not accept this reason; sent as the older one');
    }
    this.deps.send(out);
  }
}
