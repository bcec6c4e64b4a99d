import { readFile } from 'node:fs/promises';
import type { MqttClient } from 'mqtt';
import type { Registry } from 'prom-client';
import { silentLogger, type Logger } from '../shared/log/index.js';
import { CLOUD_FEATURES, encodePayload, eventSchema, topics, type CloudFeature, type DeviceEvent } from '../shared/protocol/index.js';
import { ConfigError, type EdgeConfig } from './config/index.js';
import { CloudInfoWatcher } from './status/index.js';
import { EventGate } from './status/event-gate.js';
import { KeySetFollower, TimeFloor, TrustStore, TrustStoreError } from './updates/index.js';

export interface TrustLinkDeps {
  config: EdgeConfig;
  client: MqttClient;
  now: () => Date;
  log?: Logger;
  metrics?: Registry;
}

export interface TrustLinkHooks {
  /** An accepted key set (may revoke the key behind the floor or behind the model served). */
  trustChanged: (revokedKeyIds: string[]) => void;
  /** What the cloud accepts changed (republish status with the fields it now allows). */
  cloudInfoChanged: () => void;
}

/**
 * The device's trust and its view of the cloud (issue 10), out of the daemon's composition root:
 * the time floor, the root of trust (with the key set a provisioning bundle carries, verified at open),
 * the retained key set and cloud info followers, and the device events, published through a gate that
 * holds newer event reasons until the cloud says it reads them. `open()` needs no network; `wire()`
 * builds the MQTT followers; `start()` / `stop()` go with the daemon's.
 *
 * @example
 * const link = await TrustLink.open({ config, client, now, log });
 * const updates = await UpdateManager.create({ ..., trustedKeys: () => link.trust.trustedKeys(), timeFloor: link.floor, keySetSettled: () => link.keySetSettled() });
 * link.wire({ trustChanged, cloudInfoChanged, sendEvent });
 */
export class TrustLink {
  private keysets: KeySetFollower | undefined;
  private info: CloudInfoWatcher | undefined;
  private gate: EventGate | undefined;
  private readonly log: Logger;

  private constructor(
    private readonly deps: TrustLinkDeps,
    readonly floor: TimeFloor,
    readonly trust: TrustStore,
  ) {
    this.log = deps.log ?? silentLogger;
  }

  /**
   * Opens the time floor and the trust store, then applies the bundled key set (edge.json `keyset` or
   * `keysetFile`). A bundled key set that does not verify, or a file that cannot be read, is a
   * ConfigError: the start stops with one clear line (exit 2).
   */
  static async open(deps: TrustLinkDeps): Promise<TrustLink> {
    const { config, now } = deps;
    const log = deps.log ?? silentLogger;
    // Expiry checks never trust a clock earlier than the newest signed document accepted (a Pi has no RTC).
    const floor = await TimeFloor.open({ dataDir: config.dataDir, clock: now, log: log.child({ module: 'edge/time-floor' }) });
    if (floor.clockBehind()) log.warn({ clock: now().toISOString(), floor: floor.floor?.toISOString() }, 'daemon/clock-behind-time-floor: expiry checks use the floor');
    const trust = await TrustStore.open({ dataDir: config.dataDir, trustedKeys: config.trustedKeys, rootKey: config.rootKey, rootKeyId: config.rootKeyId, log: log.child({ module: 'edge/trust' }), now: () => floor.now(), timeFloor: floor });
    const bundled = await readBundledKeySet(config);
    if (bundled) {
      try {
        const o = await trust.applyBundled(bundled.signed, bundled.source);
        log.info({ source: bundled.source, outcome: o.ok === true ? o.how : o.ok, version: trust.keyset?.version ?? null }, 'trust/bundled-keyset');
      } catch (err) {
        if (err instanceof TrustStoreError) throw new ConfigError([err.message]);
        throw err;
      }
    }
    return new TrustLink(deps, floor, trust);
  }

  /** Builds the MQTT followers; call once, before `start()`. */
  wire(hooks: TrustLinkHooks): void {
    const { client, metrics } = this.deps;
    const log = this.log;
    this.keysets = new KeySetFollower({ client, trust: this.trust, onChange: () => hooks.trustChanged(this.revokedKeyIds()), log: log.child({ module: 'edge/trust' }) });
    this.info = new CloudInfoWatcher({
      client,
      log: log.child({ module: 'edge/cloud-info' }),
      onChange: () => {
        this.gate?.cloudInfoChanged();
        hooks.cloudInfoChanged();
      },
    });
    const topic = topics.events(this.deps.config.deviceId);
    // Events at QoS 1; MQTT.js keeps them while offline and sends them after the next CONNACK.
    const send = (ev: DeviceEvent): void =>
      void client.publish(topic, encodePayload(eventSchema, ev), { qos: 1 }, (err) => {
        if (err) log.warn({ err: err.message, event: ev.type }, 'events/publish-failed');
      });
    this.gate = new EventGate({ client, info: () => this.info?.current, send, ...(metrics ? { metrics } : {}), log: log.child({ module: 'edge/events' }) });
  }

  /** Listeners first (before the client connects), so the first CONNACK already subscribes. */
  start(): void {
    this.info?.start();
    this.keysets?.start();
    this.gate?.start();
  }

  stop(): void {
    this.gate?.stop();
    this.info?.stop();
    this.keysets?.stop();
  }

  /** Whether the cloud said it accepts `feature` (no info = an older cloud = no). */
  accepts(feature: CloudFeature): boolean {
    return this.info?.accepts(feature) ?? false;
  }

  /** An event to the cloud, held or mapped as the cloud's info requires (EventGate). */
  emit(ev: DeviceEvent): void {
    if (!this.gate) throw new Error('TrustLink.emit before wire()');
    this.gate.emit(ev);
  }

  /** See KeySetFollower.keySetSettled. */
  keySetSettled(): Promise<void> {
    return this.keysets ? this.keysets.keySetSettled() : Promise.resolve();
  }

  revokedKeyIds(): string[] {
    return this.trust.keyset?.revoked.map((r) => r.keyId) ?? [];
  }

  /** The cloud's protocol revision from its retained info (1 while unknown: an older cloud). */
  cloudProtocol(): number {
    return this.info?.current?.protocolVersion ?? 1;
  }

  /** For status: whether the protocol-2 fields may be sent. */
  get statusExt(): boolean {
    return this.accepts(CLOUD_FEATURES.statusExt);
  }
}

async function readBundledKeySet(config: EdgeConfig): Promise<{ signed: unknown; source: string } | undefined> {
  if (config.keyset) return { signed: config.keyset, source: 'keyset' };
  if (!config.keysetFile) return undefined;
  let text: string;
  try {
    text = await readFile(config.keysetFile, 'utf8');
  } catch (err) {
    throw new ConfigError([`keysetFile: cannot read ${config.keysetFile} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`]);
  }
  try {
    return { signed: JSON.parse(text) as unknown, source: `keysetFile ${config.keysetFile}` };
  } catch {
    throw new ConfigError([`keysetFile: ${config.keysetFile} is not JSON (expected a signed key set)`]);
  }
}
