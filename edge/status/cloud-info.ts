import type { MqttClient } from 'mqtt';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import { cloudAccepts, cloudInfoSchema, decodePayload, PayloadError, topics, type CloudFeature, type CloudInfo } from '../../shared/protocol/index.js';

export interface CloudInfoWatcherDeps {
  client: MqttClient;
  log?: Logger;
  /** Called when what the cloud accepts changes (e.g. to republish status with the new fields). */
  onChange?: (info: CloudInfo | undefined) => void;
}

/**
 * Follows the cloud's retained `apprentice/v1/cloud` info (shared/protocol/compat.ts): the device
 * sends a new field only when the cloud lists it in `accepts`. Until the info arrives, and with an
 * older cloud that never publishes it, the device sends protocol-1 payloads only. A malformed info is
 * logged and treated as absent (an older-protocol answer is always safe). An empty retained publish
 * (the info cleared) also means "absent".
 *
 * @example
 * const info = new CloudInfoWatcher({ client, onChange: () => status.publish() });
 * info.start();  // before client.connect()
 * if (info.accepts(CLOUD_FEATURES.statusExt)) ...
 */
export class CloudInfoWatcher {
  private info: CloudInfo | undefined;
  private readonly topic = topics.cloudInfo();
  private readonly log: Logger;
  private started = false;

  constructor(private readonly deps: CloudInfoWatcherDeps) {
    this.log = deps.log ?? silentLogger;
  }

  get current(): CloudInfo | undefined {
    return this.info;
  }

  accepts(feature: CloudFeature): boolean {
    return cloudAccepts(this.info, feature);
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    this.deps.client.on('connect', this.onConnect);
    this.deps.client.on('message', this.onMessage);
    if (this.deps.client.connected) this.onConnect();
  }

  stop(): void {
    this.started = false;
    this.deps.client.removeListener('connect', this.onConnect);
    this.deps.client.removeListener('message', this.onMessage);
  }

  /** Applies one payload of the info topic (exposed for tests). */
  handle(payload: Buffer): void {
    let next: CloudInfo | undefined;
    if (payload.byteLength > 0) {
      try {
        next = decodePayload(cloudInfoSchema, payload);
      } catch (err) {
        if (!(err instanceof PayloadError)) throw err;
        this.log.warn({ reason: err.message.slice(0, 300) }, 'cloud-info/malformed');
      }
    }
    const before = JSON.stringify([...(this.info?.accepts ?? [])].sort());
    const after = JSON.stringify([...(next?.accepts ?? [])].sort());
    this.info = next;
    if (next) this.log.info({ protocolVersion: next.protocolVersion, accepts: next.accepts }, 'cloud-info/received');
    if (before !== after) this.deps.onChange?.(next);
  }

  // A clean session has no subscriptions: subscribe on every connect (the daemon turns resubscribe off).
  private readonly onConnect = (): void => {
    this.deps.client.subscribe(this.topic, { qos: 1 }, (err, granted) => {
      if (err) this.log.debug({ err: err.message }, 'cloud-info/subscribe-interrupted');
      else if (granted?.some((g) => g.qos === 128)) this.log.warn({ topic: this.topic }, 'cloud-info/subscribe-refused: the broker ACL predates protocol 2; sending protocol-1 payloads');
    });
  };

  private readonly onMessage = (topic: string, payload: Buffer): void => {
    if (topic !== this.topic) return;
    try {
      this.handle(payload);
    } catch (err) {
      this.log.error({ err }, 'cloud-info/message');
    }
  };
}
