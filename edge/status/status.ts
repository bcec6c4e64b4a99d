import type { MqttClient } from 'mqtt';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import { CLOUD_FEATURES, DEVICE_CAPABILITIES, type CloudFeature, PROTOCOL_REVISION, PROTOCOL_VERSION, assertPublishable, encodePayload, statusSchema, topics, type DeviceCapability, type Status } from '../../shared/protocol/index.js';
import type { MqttWill } from '../config/index.js';
import { agentPlatform, readAgentVersion } from './agent-version.js';

/** What the device runs, as reported in status and telemetry. */
export interface RunningRelease {
  model: string;
  release: number;
  sha256: string;
}

/** `apprentice-edge/<version>`, the version read from the installed bundle's package.json. */
export const AGENT = `apprentice-edge/${readAgentVersion().version}`;

/**
 * What this daemon understands from the cloud (shared/protocol/compat.ts DEVICE_CAPABILITIES). A
 * capability is listed only with the code that handles it: the cloud sends what is listed here.
 */
export const EDGE_CAPABILITIES: readonly DeviceCapability[] = [
  DEVICE_CAPABILITIES.inputRange,
  DEVICE_CAPABILITIES.inputImage,
  DEVICE_CAPABILITIES.lineageSource,
  DEVICE_CAPABILITIES.receipts,
  DEVICE_CAPABILITIES.keyset,
  DEVICE_CAPABILITIES.assignment,
  DEVICE_CAPABILITIES.shadow,
  DEVICE_CAPABILITIES.cohort,
];

/** The protocol-2 status fields; sent only when the cloud's info accepts `status.ext`. */
export type StatusExtension = Required<Pick<Status, 'protocolVersion' | 'capabilities' | 'trust' | 'degraded'>>;

/** The protocol-2 fields as this daemon fills them; `trust` from its TrustStore. */
export function statusExtension({ degraded, trust = { keysetVersion: null, state: 'trusted_keys' }, agentUpdates = false }: { degraded: string | null; trust?: StatusExtension['trust']; agentUpdates?: boolean }): StatusExtension {
  // `agent-update` only when running under the launcher's agent layout (edge/agent, issue 14).
  const capabilities = agentUpdates ? [...EDGE_CAPABILITIES, DEVICE_CAPABILITIES.agentUpdate] : [...EDGE_CAPABILITIES];
  return { protocolVersion: PROTOCOL_REVISION, capabilities, trust, degraded };
}

/** The status fields for a cloud that accepts status.ext: `platform` only when it also accepts `status.platform`. */
export function statusFieldsFor(ext: StatusExtension, accepts: (feature: CloudFeature) => boolean): StatusExtension & Pick<Status, 'platform'> {
  return accepts(CLOUD_FEATURES.statusPlatform) ? { ...ext, platform: agentPlatform() } : ext;
}

/** A `devices/{id}/status` payload; `ext` only for a cloud that accepts it (compat.ts). */
export function statusPayload(deviceId: string, state: Status['state'], running: RunningRelease | null, at: Date, ext?: StatusExtension & Pick<Status, 'platform'>, agent = AGENT): Buffer {
  return encodePayload(statusSchema, {
    v: PROTOCOL_VERSION,
    deviceId,
    state,
    model: running?.model ?? null,
    release: running?.release ?? null,
    sha256: running?.sha256 ?? null,
    at: at.toISOString(),
    agent,
    ...ext,
  });
}

/** The last will: the broker publishes it, retained, when our connection dies without a DISCONNECT. */
export function lastWill(deviceId: string, running: RunningRelease | null, at: Date, ext?: StatusExtension & Pick<Status, 'platform'>, agent = AGENT): MqttWill {
  return { topic: assertPublishable(topics.status(deviceId)), payload: statusPayload(deviceId, 'offline', running, at, ext, agent), qos: 1, retain: true };
}

export interface StatusPublisherDeps {
  client: MqttClient;
  deviceId: string;
  /** The release being served now (null before the first install). */
  running: () => RunningRelease | null;
  /** The protocol-2 fields, or undefined while the cloud does not accept them (CloudInfoWatcher). */
  extension?: () => (StatusExtension & Pick<Status, 'platform'>) | undefined;
  log?: Logger;
  now?: () => Date;
  /** The `agent` string (default AGENT, this bundle's); the simulator's agent mode names the version it switched to. */
  agent?: () => string;
}

/**
 * The retained `devices/{id}/status` topic (STYLE.md 4): `online` with the running release on every
 * connect — a broker restarted without persistence forgot it, and our own last will overwrote it — and
 * again after each install or rollback (`publish()`); `offline` by the last will, or by `offline()` on a
 * clean stop (a DISCONNECT discards the will, [MQTT-3.1.2-10]).
 *
 * @example
 * const status = new StatusPublisher({ client, deviceId, running: () => current });
 * status.start();            // before client.connect()
 * status.publish();          // after an install
 * await status.offline();    // on SIGTERM, before client.end()
 */
export class StatusPublisher {
  private readonly topic: string;
  private readonly log: Logger;
  private readonly now: () => Date;
  private started = false;
  /** When an `online` status was last acknowledged by the broker (ms since epoch; 0 = not yet). */
  acknowledgedAt = 0;

  constructor(private readonly deps: StatusPublisherDeps) {
    this.topic = assertPublishable(topics.status(deps.deviceId));
    this.log = deps.log ?? silentLogger;
    this.now = deps.now ?? (() => new Date());
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    this.deps.client.on('connect', this.onConnect);
    if (this.deps.client.connected) this.publish();
  }

  stop(): void {
    this.started = false;
    this.deps.client.removeListener('connect', this.onConnect);
  }

  /**
   * Publishes `online` with the running release (when connected; otherwise the next connect does) and
   * refreshes the last will so that it, too, names the release (it applies from the next connection).
   */
  publish(): void {
    const { client, deviceId } = this.deps;
    const running = this.deps.running();
    const ext = this.deps.extension?.();
    const agent = this.deps.agent?.() ?? AGENT;
    client.options.will = lastWill(deviceId, running, this.now(), ext, agent);
    if (!client.connected) return;
    client.publish(this.topic, statusPayload(deviceId, 'online', running, this.now(), ext, agent), { qos: 1, retain: true }, (err) => {
      if (err) this.log.warn({ err }, 'status/publish-failed');
      else this.acknowledgedAt = Date.now();
    });
  }

  /** Publishes the retained `offline` status and waits for the PUBACK (at most `timeoutMs`). */
  offline(timeoutMs = 2_000): Promise<boolean> {
    const { client, deviceId } = this.deps;
    if (!client.connected) return Promise.resolve(false);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      client.publish(this.topic, statusPayload(deviceId, 'offline', this.deps.running(), this.now(), this.deps.extension?.()), { qos: 1, retain: true }, (err) => {
        clearTimeout(timer);
        if (err) this.log.warn({ err }, 'status/offline-failed');
        resolve(!err);
      });
    });
  }

  private readonly onConnect = (): void => {
    try {
      this.publish();
    } catch (err) {
      this.log.error({ err }, 'status/connect');
    }
  };
}
