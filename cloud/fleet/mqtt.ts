import { hostname } from 'node:os';
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import { Counter, Registry as PromRegistry } from 'prom-client';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import { AckQueue } from './ack-queue.js';
import { assertPublishable, parseTopic, topics, type DeviceTopicKind } from '../../shared/protocol/index.js';

/** The shared-subscription group of cloud replicas (`$share/cloud/...`). */
export const CLOUD_SHARE_GROUP = 'cloud';

export interface CloudMqttOptions {
  /** Broker URL, e.g. `mqtt://127.0.0.1:1883` or `mqtts://broker:8883`. */
  url: string;
  /**
   * Stable per replica: with a persistent session (clean=false) the broker queues QoS 1 device
   * messages for this id while the cloud is away. Default `apprentice-cloud-<hostname>`.
   */
  clientId?: string;
  username?: string;
  password?: string;
  /** Delay between reconnect attempts; default 1000 ms. */
  reconnectPeriod?: number;
  connectTimeoutMs?: number;
  /** 4 = MQTT 3.1.1 (default; the only one aedes speaks), 5 behind this switch (DESIGN.md "MQTT"). */
  protocolVersion?: 4 | 5;
  /**
   * MQTT 5 only: how long the broker keeps the session after a disconnect. With v5, clean=false alone
   * is not enough: a session expiry of 0 (the default) ends the session at disconnect [MQTT-3.1.2-23].
   * Default 7 days.
   */
  sessionExpirySeconds?: number;
  /**
   * Consume device topics through `$share/cloud/...` so several replicas split the work (Mosquitto,
   * EMQX; also on 3.1.1). Must be false with aedes, which has no shared subscriptions.
   */
  sharedSubscriptions: boolean;
  log?: Logger;
  /** Prometheus registry for the counters; a private one by default. */
  metrics?: PromRegistry;
  /** Extra MQTT.js options (TLS material, keepalive...), applied last. */
  clientOptions?: Partial<IClientOptions>;
  /**
   * QoS 1 messages whose handlers may work at once, each PUBACK held until its work is done (so ingest
   * can commit many batches in one transaction). Past it, reading stops until the oldest is done
   * (backpressure, counted). The broker's inflight limit usually binds first. Default 64.
   */
  maxPendingAcks?: number;
}

export interface PublishOptions {
  qos: 0 | 1;
  retain: boolean;
}

/** A message on a device topic, as handed to `onDevice` handlers. */
export interface DeviceMessage {
  deviceId: string;
  kind: DeviceTopicKind;
  payload: Buffer;
  /** True when the broker delivered it from its retained store (e.g. statuses at subscribe time). */
  retain: boolean;
}

/**
 * Handles one device message. A returned promise delays the PUBACK (QoS 1) until it settles: that is
 * how ingest acknowledges a batch only after its rows are committed (issue 9).
 */
export type DeviceMessageHandler = (msg: DeviceMessage) => void | Promise<unknown>;

export interface SubscribeDeviceOptions {
  /**
   * Override the client's `sharedSubscriptions` for this kind. Retained topics (status) want a plain
   * subscription: brokers do not send retained messages to a new shared subscription (MQTT 5 §4.8.2).
   */
  shared?: boolean;
}

/** What the publisher needs from an MQTT connection; `CloudMqtt` is one, tests may pass a fake. */
export interface MqttPublisher {
  publish(topic: string, payload: Buffer | string, opts: PublishOptions): Promise<void>;
}

/** What ingest needs from an MQTT connection. */
export interface DeviceSubscriber {
  onDevice(kind: DeviceTopicKind, handler: DeviceMessageHandler, opts?: SubscribeDeviceOptions): () => void;
}

/**
 * The cloud's MQTT.js connection. Persistent session (clean=false) so QoS 1 device messages wait
 * for us across restarts; subscriptions are re-sent on every connect (STYLE.md 4: MQTT.js skips that
 * when the broker says the session is present, and a broker that lost its state would leave us deaf).
 *
 * @example
 * const m = await CloudMqtt.create({ url: broker.url, sharedSubscriptions: false });
 * const off = m.onDevice('status', (msg) => ...);
 * await m.publish(topics.desired('pi-1'), payload, { qos: 1, retain: true });
 * await m.dispose();
 *
 * Acknowledgement: messages are handed to handlers through MQTT.js's `handleMessage` hook. When a
 * handler returns a promise, the PUBACK waits for it. MQTT.js reads incoming packets one at a time and
 * waits for that hook's callback, which would also send the PUBACK: one batch per commit, one fsync
 * each, and the broker's PUBACKs for our own publishes (receipts) stuck behind them (issue 9 overflow
 * drill). So up to `maxPendingAcks` QoS 1 messages are released at once (see `AckQueue`): reading goes
 * on, their PUBACKs go out in arrival order once each one's work is done, and ingest commits them
 * together. Past that bound reading waits (backpressure); the broker keeps the rest.
 * Register handlers (`onDevice`) before `start()`: a message of a kind nobody handles is logged,
 * counted (`apprentice_cloud_mqtt_unhandled_total`) and acknowledged, never buffered.
 */
export class CloudMqtt implements MqttPublisher, DeviceSubscriber {
  private client: MqttClient | undefined;
  private readonly handlers = new Map<DeviceTopicKind, Set<DeviceMessageHandler>>();
  /** filter → kind */
  private readonly filters = new Map<string, DeviceTopicKind>();
  private readonly log: Logger;
  private readonly unhandled: Counter<'kind'>;
  private readonly backpressure: Counter;
  private unhandledLogged = 0;

  /** No side effects: register handlers with `onDevice`, then `start()`. */
  constructor(private readonly opts: CloudMqttOptions) {
    this.log = opts.log ?? silentLogger;
    const reg = opts.metrics ?? new PromRegistry();
    const name = 'apprentice_cloud_mqtt_unhandled_total';
    this.unhandled = (reg.getSingleMetric(name) as Counter<'kind'> | undefined) ?? new Counter({ name, help: 'Device messages acknowledged with no handler registered for their kind (logged)', labelNames: ['kind'] as const, registers: [reg] });
    const bp = 'apprentice_cloud_mqtt_ack_backpressure_total';
    this.backpressure = (reg.getSingleMetric(bp) as Counter | undefined) ?? new Counter({ name: bp, help: 'Times reading from the broker paused because maxPendingAcks messages were still being handled', registers: [reg] });
  }

  /** Connects and resolves after the first CONNACK (rejects after `connectTimeoutMs`, default 10 s). */
  static async create(opts: CloudMqttOptions): Promise<CloudMqtt> {
    const m = new CloudMqtt(opts);
    await m.start();
    return m;
  }

  get connected(): boolean {
    return this.client?.connected ?? false;
  }

  /** The underlying MQTT.js client (undefined before start / after dispose). */
  get raw(): MqttClient | undefined {
    return this.client;
  }

  async start(): Promise<void> {
    if (this.client) return;
    const o = this.opts;
    const v5 = o.protocolVersion === 5;
    const client = mqtt.connect(o.url, {
      clientId: o.clientId ?? `apprentice-cloud-${hostname()}`.slice(0, 64),
      clean: false,
      protocolVersion: o.protocolVersion ?? 4,
      reconnectPeriod: o.reconnectPeriod ?? 1000,
      connectTimeout: o.connectTimeoutMs ?? 10_000,
      // We resubscribe ourselves on every connect (see class doc).
      resubscribe: false,
      ...(o.username !== undefined ? { username: o.username } : {}),
      ...(o.password !== undefined ? { password: o.password } : {}),
      ...(v5 ? { properties: { sessionExpiryInterval: o.sessionExpirySeconds ?? 7 * 24 * 3600 } } : {}),
      ...o.clientOptions,
    });
    this.client = client;
    client.on('connect', (connack) => {
      this.log.info({ sessionPresent: connack.sessionPresent, filters: this.filters.size }, 'mqtt/connected');
      for (const [filter] of this.filters) this.sendSubscribe(filter);
    });
    client.on('close', () => this.log.debug('mqtt/closed'));
    client.on('offline', () => this.log.warn('mqtt/offline'));
    client.on('error', (err) => this.log.warn({ err: err.message }, 'mqtt/error'));
    // MQTT.js emits 'message' and then calls `handleMessage` with the same packet; the callback of the
    // latter sends the PUBACK. So: dispatch on 'message', and hold the callback until the handlers' work
    // (ingest's commit) is done.
    const pendingAcks = new WeakMap<IPublishPacket, Promise<void>>();
    client.on('message', (topic, payload, packet) => {
      const pending = this.dispatch(topic, payload, packet.retain);
      if (pending) pendingAcks.set(packet, pending);
    });
    let waits = 0;
    const acks = new AckQueue(client, this.opts.maxPendingAcks ?? 64, () => {
      this.backpressure.inc();
      if (waits++ % 1000 === 0) this.log.warn({ maxPendingAcks: this.opts.maxPendingAcks ?? 64, total: waits }, 'mqtt/ack-backpressure: reading paused until a held message is handled');
    });
    client.on('close', () => acks.reset());
    client.handleMessage = (packet: IPublishPacket, callback: (err?: Error) => void): void => {
      const pending = pendingAcks.get(packet);
      pendingAcks.delete(packet);
      acks.handle(packet, pending, callback);
    };
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        client.end(true);
        this.client = undefined;
        reject(new Error(`CloudMqtt: no connection to ${o.url} within ${o.connectTimeoutMs ?? 10_000} ms`));
      }, o.connectTimeoutMs ?? 10_000);
      const onConnect = (): void => {
        cleanup();
        resolve();
      };
      const cleanup = (): void => {
        clearTimeout(timer);
        client.off('connect', onConnect);
      };
      client.on('connect', onConnect);
    });
  }

  /**
   * Publishes and resolves on PUBACK (QoS 1) or once written (QoS 0). Refuses wildcard topics.
   * While disconnected MQTT.js keeps QoS 1 publishes and sends them after the reconnect.
   */
  async publish(topic: string, payload: Buffer | string, { qos, retain }: PublishOptions): Promise<void> {
    assertPublishable(topic);
    const client = this.client;
    if (!client) throw new Error('CloudMqtt: not started');
    return new Promise((resolve, reject) => {
      client.publish(topic, payload, { qos, retain }, (err) => (err ? reject(err) : resolve()));
    });
  }

  /**
   * Receives `kind` messages of every device. Subscribes `topics.allDevices(kind, 'cloud')` when
   * shared subscriptions are on, else the plain filter. Returns an unsubscribe function.
   */
  onDevice(kind: DeviceTopicKind, handler: DeviceMessageHandler, { shared = this.opts.sharedSubscriptions }: SubscribeDeviceOptions = {}): () => void {
    const filter = topics.allDevices(kind, shared ? CLOUD_SHARE_GROUP : undefined);
    let set = this.handlers.get(kind);
    if (!set) this.handlers.set(kind, (set = new Set()));
    set.add(handler);
    if (!this.filters.has(filter)) {
      this.filters.set(filter, kind);
      this.sendSubscribe(filter);
    }
    return () => {
      set.delete(handler);
      if (set.size > 0) return;
      this.handlers.delete(kind);
      for (const [f, k] of this.filters) {
        if (k !== kind) continue;
        this.filters.delete(f);
        this.client?.unsubscribe(f, (err?: Error) => err && this.log.debug({ err: err.message, filter: f }, 'mqtt/unsubscribe-failed'));
      }
    };
  }

  async dispose(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (!client) return;
    await client.endAsync().catch((err: Error) => this.log.debug({ err: err.message }, 'mqtt/end-failed'));
  }

  private sendSubscribe(filter: string): void {
    const client = this.client;
    if (!client?.connected) return; // the 'connect' handler subscribes everything
    client.subscribe(filter, { qos: 1 }, (err, granted) => {
      // "Connection closed" while SUBSCRIBE was in flight is normal: the next connect resubscribes.
      if (err) return this.log.debug({ err: err.message, filter }, 'mqtt/subscribe-interrupted');
      const refused = granted?.filter((g) => g.qos === 128) ?? [];
      if (refused.length) this.log.error({ filter }, 'mqtt/subscribe-refused');
    });
  }

  /**
   * A device may retain only its status. Mosquitto's ACL cannot see the retain flag (the embedded
   * broker refuses such publishes), so a retained telemetry/event/example batch from a device is
   * ignored here and cleared, lest it be replayed to every later subscriber (issue 10).
   */
  private clearRetained(topic: string, deviceId: string): undefined {
    this.log.warn({ topic, deviceId }, 'mqtt/device-retained-cleared');
    this.publish(topic, Buffer.alloc(0), { qos: 1, retain: true }).catch((err: unknown) => this.log.warn({ err, topic }, 'mqtt/clear-retained-failed'));
    return undefined;
  }

  /** Runs the handlers of one message; a promise when one of them is still working (the PUBACK waits). */
  private dispatch(topic: string, payload: Buffer, retain: boolean): Promise<void> | undefined {
    // One bad message or handler never takes the service down (STYLE.md 5).
    try {
      const t = parseTopic(topic);
      if (!t || t.type !== 'device') return undefined;
      if (t.kind !== 'status') {
        if (retain && payload.byteLength > 0) return this.clearRetained(topic, t.deviceId);
        // An empty publish clears a retained message ([MQTT-3.3.1-10]), ours included: not data.
        if (payload.byteLength === 0) return void this.log.debug({ topic }, 'mqtt/retained-clear-seen');
      }
      const set = this.handlers.get(t.kind);
      if (!set) {
        // A persistent session may still hold a subscription nobody handles now. Acknowledging is safe:
        // examples are deleted on the device only by a receipt, never by a PUBACK.
        this.unhandled.inc({ kind: t.kind });
        if (this.unhandledLogged++ % 1000 === 0) this.log.warn({ topic, kind: t.kind, total: this.unhandledLogged }, 'mqtt/unhandled-message');
        return undefined;
      }
      const waits: Promise<unknown>[] = [];
      for (const h of set) {
        try {
          const r = h({ deviceId: t.deviceId, kind: t.kind, payload, retain });
          if (r) waits.push(r.catch((err: unknown) => this.log.error({ err, topic }, 'mqtt/handler-failed')));
        } catch (err) {
          this.log.error({ err, topic }, 'mqtt/handler-failed');
        }
      }
      return waits.length ? Promise.all(waits).then(() => undefined) : undefined;
    } catch (err) {
      this.log.error({ err, topic }, 'mqtt/dispatch-failed');
      return undefined;
    }
  }
}
