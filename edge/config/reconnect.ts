import type { MqttClient } from 'mqtt';
import { createBackoff, type BackoffOptions } from '../outbox/backoff.js';

/** Internals of MQTT.js 5 this wrapper restarts the reconnect timer through (absent → fixed period). */
interface ReconnectInternals {
  _clearReconnect?: () => void;
  _setupReconnect?: () => void;
}

/**
 * Jittered exponential reconnects for an MQTT.js client (issue 8: a broker restart must not make 10,000
 * devices reconnect in lockstep). MQTT.js retries every fixed `reconnectPeriod`; this sets the period
 * from the outbox's `createBackoff` (equal jitter, delay in [c/2, c)) each time the client goes offline
 * and after each failed attempt, and resets it on connect. In-flight messages stay queued as with the
 * plain period (the period stays > 0, so MQTT.js keeps its outgoing store across reconnects).
 *
 * @example
 * const client = mqtt.connect(url, options);
 * const stop = jitterReconnects(client, { initialMs: 5_000, maxMs: 120_000 });
 */
export function jitterReconnects(client: MqttClient, opts: BackoffOptions = {}): () => void {
  const backoff = createBackoff({ initialMs: client.options.reconnectPeriod || 1000, maxMs: 120_000, ...opts });
  const internals = client as unknown as ReconnectInternals;
  let justArmed = false;
  // 'offline' is emitted inside MQTT.js's _setupReconnect (its own 'close' listener, which runs before
  // ours) just before it arms the timer with the period.
  const onOffline = (): void => {
    client.options.reconnectPeriod = backoff.next();
    justArmed = true;
  };
  // A failed attempt closes again while `reconnecting`: re-arm the timer with the next, longer delay.
  const onClose = (): void => {
    if (justArmed) {
      justArmed = false;
      return;
    }
    if (!client.reconnecting || client.disconnecting) return;
    if (typeof internals._clearReconnect !== 'function' || typeof internals._setupReconnect !== 'function') return;
    client.options.reconnectPeriod = backoff.next();
    internals._clearReconnect();
    internals._setupReconnect();
  };
  const onConnect = (): void => backoff.reset();
  client.on('offline', onOffline);
  client.on('close', onClose);
  client.on('connect', onConnect);
  return () => {
    client.off('offline', onOffline);
    client.off('close', onClose);
    client.off('connect', onConnect);
  };
}

/**
 * Ends an MQTT.js client for a stop: gracefully (waiting for in-flight QoS 1 acks) when connected, but
 * forced after `graceMs`, since a broker that is gone must not hold the stop; at once when not connected
 * (nothing can be flushed; a graceful end would wait for acks that never come).
 */
export async function endClient(client: MqttClient, graceMs: number): Promise<void> {
  if (!client.connected) return void (await client.endAsync(true).catch(() => undefined));
  const ended = client.endAsync(false).then(() => true);
  const late = new Promise<false>((r) => setTimeout(() => r(false), graceMs).unref());
  if (!(await Promise.race([ended, late]).catch(() => false))) await client.endAsync(true).catch(() => undefined);
}
