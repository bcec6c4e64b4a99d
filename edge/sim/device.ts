import { mkdir } from 'node:fs/promises';
import mqtt, { type MqttClient } from 'mqtt';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import type { TrustedKey } from '../../shared/manifest/index.js';
import { CLOUD_FEATURES, DEVICE_CAPABILITIES, PROTOCOL_REVISION, encodePayload, eventSchema, topics, type DeviceEvent } from '../../shared/protocol/index.js';
import { jitterReconnects, mqttClientOptions, parseEdgeConfig, type EdgeConfig } from '../config/index.js';
import type { ModelHost } from '../runtime/index.js';
import { CloudInfoWatcher, EDGE_CAPABILITIES, agentPlatform, InferenceStats, StatusPublisher, TelemetryPublisher, buildTelemetry, lastWill, type RunningRelease, type StatusExtension } from '../status/index.js';
import { UpdateManager, type UpdateOutcome } from '../updates/index.js';
import type { SharedSessions } from './sessions.js';
import { SimAgent } from './agent.js';
import { join } from 'node:path';

/**
 * One simulated device: the real edge update path (edge/updates UpdateManager: manifest verification,
 * chunk fetch over MQTT, hash checks, slots, install state machine, events), the real edge/runtime
 * ModelHost (self-test, switch) and the real edge/status publisher, each with its own MQTT connection
 * and its own persisted data dir, and the real telemetry heartbeat (rollouts advance on canary telemetry).
 * What it leaves out of the daemon: the local HTTP API, selection and the outbox (no traffic is
 * simulated, so telemetry reports zero requests and an empty outbox). The ORT session comes from the process-wide
 * {@link SharedSessions}.
 */

export interface SimDeviceOptions {
  deviceId: string;
  dataDir: string;
  mqttUrl: string;
  trustedKeys: readonly TrustedKey[];
  sessions: SharedSessions;
  username?: string;
  password?: string;
  log?: Logger;
  /** Called with every event the device publishes (installed, rejected, rolled_back). */
  onEvent?: (ev: DeviceEvent) => void;
  /** MQTT reconnect period; default 1 s. */
  reconnectMs?: number;
  keepaliveSeconds?: number;
  mqttIdleTimeoutMs?: number;
  retryInitialMs?: number;
  /** Telemetry heartbeat period; default 30 s (the daemon's default). Also sent right after each install. */
  telemetrySeconds?: number;
  /** The device's model outputs are wrong (see SharedSessions.host): its real self-test fails every install. */
  failSelfTest?: boolean;
  /** Agent mode: the real edge/agent install logic against `<agentRoot>/<deviceId>` (edge/sim/agent.ts). */
  agentRoot?: string;
  /** Agent mode: every new agent version fails its health commit here (edge/sim/shares.ts failAgentTrial). */
  failAgentTrial?: boolean;
  agentHealthDeadlineMs?: number | undefined;
}

/**
 * What a simulated device declares (status `capabilities`, to a cloud that accepts protocol-2 status):
 * the daemon's capabilities that live in the update path it runs for real, not receipts (no outbox) nor
 * key sets (no key-set follower; it trusts its bundle's keys, `trusted_keys`), nor shadow releases (its
 * update manager has no shadow runner: it would ignore them).
 */
export const SIM_CAPABILITIES = EDGE_CAPABILITIES.filter((c) => c !== DEVICE_CAPABILITIES.receipts && c !== DEVICE_CAPABILITIES.keyset && c !== DEVICE_CAPABILITIES.shadow);
const SIM_EXTENSION: StatusExtension = { protocolVersion: PROTOCOL_REVISION, capabilities: [...SIM_CAPABILITIES], trust: { keysetVersion: null, state: 'trusted_keys' }, degraded: null };

const EMPTY_OUTBOX = { depth: 0, bytes: 0, dropped: 0, evicted: 0, selected: 0, published: 0, refused: 0, lost: 0 };

export class SimDevice {
  readonly config: EdgeConfig;
  private client!: MqttClient;
  private host!: ModelHost;
  private updates!: UpdateManager;
  private status!: StatusPublisher;
  private telemetry!: TelemetryPublisher;
  private cloudInfo!: CloudInfoWatcher;
  private readonly stats = new InferenceStats();
  private readonly startedAt = Date.now();
  private readonly log: Logger;
  private stopped = false;
  /** Agent mode only (`agentRoot`). */
  agent: SimAgent | undefined;

  private constructor(private readonly opts: SimDeviceOptions) {
    this.log = opts.log ?? silentLogger;
    // The same config validation as the daemon: a simulated device is configured like a real one.
    this.config = parseEdgeConfig({
      version: 1,
      deviceId: opts.deviceId,
      dataDir: opts.dataDir,
      mqtt: {
        url: opts.mqttUrl,
        ...(opts.username !== undefined ? { username: opts.username } : {}),
        ...(opts.password !== undefined ? { password: opts.password } : {}),
        reconnectMs: opts.reconnectMs ?? 1_000,
        keepaliveSeconds: opts.keepaliveSeconds ?? 60,
      },
      trustedKeys: [...opts.trustedKeys],
      telemetrySeconds: opts.telemetrySeconds ?? 30,
      updates: { mqttIdleTimeoutMs: opts.mqttIdleTimeoutMs ?? 60_000, retryInitialMs: opts.retryInitialMs ?? 2_000, retryMaxMs: 60_000 },
    });
  }

  static async create(opts: SimDeviceOptions): Promise<SimDevice> {
    const d = new SimDevice(opts);
    await d.open();
    return d;
  }

  get id(): string {
    return this.config.deviceId;
  }

  get connected(): boolean {
    return this.client.connected;
  }

  get mqtt(): MqttClient {
    return this.client;
  }

  running(): RunningRelease | null {
    const cur = this.host.current();
    return cur ? { model: cur.manifest.model, release: cur.manifest.release, sha256: cur.sha256 } : null;
  }

  private async open(): Promise<void> {
    const { config, log } = this;
    await mkdir(config.dataDir, { recursive: true });
    this.client = mqtt.connect(config.mqtt.url, await mqttClientOptions(config, lastWill(config.deviceId, null, new Date())));
    jitterReconnects(this.client, { initialMs: config.mqtt.reconnectMs, maxMs: config.mqtt.reconnectMs * 16 });
    this.host = this.opts.sessions.host(log, { faulty: this.opts.failSelfTest === true });
    this.updates = await UpdateManager.create({
      deviceId: config.deviceId,
      dataDir: config.dataDir,
      trustedKeys: config.trustedKeys,
      host: this.host,
      emit: (ev) => this.emit(ev),
      mqtt: this.client,
      log,
      mqttIdleTimeoutMs: config.updates.mqttIdleTimeoutMs,
      retry: { initialMs: config.updates.retryInitialMs, maxMs: config.updates.retryMaxMs },
    });
    this.cloudInfo = new CloudInfoWatcher({ client: this.client, log, onChange: () => this.status.publish() });
    if (this.opts.agentRoot) {
      this.agent = new SimAgent({
        deviceId: config.deviceId,
        root: join(this.opts.agentRoot, config.deviceId),
        client: this.client,
        trustedKeys: config.trustedKeys,
        cloudProtocol: () => this.cloudInfo.current?.protocolVersion ?? 1,
        emit: (ev) => this.emitAgent(ev),
        publishStatus: () => this.status.publish(),
        statusAcknowledgedAt: () => this.status.acknowledgedAt,
        log,
        failTrial: this.opts.failAgentTrial === true,
        ...(this.opts.agentHealthDeadlineMs !== undefined ? { healthDeadlineMs: this.opts.agentHealthDeadlineMs } : {}),
      });
      await this.agent.open();
    }
    const ext = this.agent ? { ...SIM_EXTENSION, capabilities: [...SIM_CAPABILITIES, DEVICE_CAPABILITIES.agentUpdate] } : SIM_EXTENSION;
    this.status = new StatusPublisher({
      client: this.client,
      deviceId: config.deviceId,
      running: () => this.running(),
      extension: () => (this.cloudInfo.accepts(CLOUD_FEATURES.statusExt) ? (this.cloudInfo.accepts(CLOUD_FEATURES.statusPlatform) ? { ...ext, platform: agentPlatform() } : ext) : undefined),
      ...(this.agent ? { agent: () => `apprentice-edge/${this.agent!.version}` } : {}),
      log,
    });
    this.telemetry = new TelemetryPublisher({
      client: this.client,
      deviceId: config.deviceId,
      intervalMs: config.telemetrySeconds * 1000,
      collect: () =>
        buildTelemetry({ deviceId: config.deviceId, running: () => this.running(), stats: this.stats, outbox: () => EMPTY_OUTBOX, health: () => (this.host.ready ? 'ok' : 'no_model'), startedAt: this.startedAt }),
      log,
    });
    const desired = topics.desired(config.deviceId);
    const agentTopic = topics.agent(config.deviceId);
    this.client.on('error', (err) => log.debug({ err: err.message }, 'sim/mqtt-error'));
    this.client.on('connect', () => {
      this.client.subscribe(this.agent ? [desired, agentTopic] : desired, { qos: 1 }, (err) => {
        if (err) log.debug({ err: err.message }, 'sim/subscribe-interrupted');
      });
    });
    this.client.on('message', (topic, payload) => {
      if (topic === agentTopic && this.agent) {
        void this.agent.handle(payload).then((o) => log.debug({ outcome: o }, 'sim/agent-outcome'));
        return;
      }
      if (topic !== desired) return;
      void this.updates.handleDesired(payload).then((o: UpdateOutcome) => log.debug({ outcome: o }, 'sim/outcome'));
    });
  }

  /** Restores the persisted model (like the daemon after a restart), then connects. */
  async start(): Promise<void> {
    await this.updates.restore();
    this.cloudInfo.start();
    this.status.start();
    this.telemetry.start();
    this.client.connect();
  }

  /** Resolves once connected (or rejects after `timeoutMs`). */
  waitConnected(timeoutMs = 30_000): Promise<void> {
    if (this.client.connected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.client.removeListener('connect', on);
        reject(new Error(`${this.id}: not connected after ${timeoutMs} ms`));
      }, timeoutMs);
      const on = (): void => {
        clearTimeout(t);
        resolve();
      };
      this.client.once('connect', on);
    });
  }

  /** Resolves true once the cloud's retained info arrived (then the status carries the protocol-2 fields), false after `timeoutMs`. */
  async waitCloudInfo(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.cloudInfo.current) {
      if (Date.now() > deadline || this.stopped) return false;
      await new Promise((r) => setTimeout(r, 50));
    }
    // The status republished on that change is queued on the same connection, before anything later.
    return true;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.agent?.stop();
    this.status.stop();
    this.telemetry.stop();
    this.cloudInfo.stop();
    await this.updates.dispose().catch(() => undefined);
    await this.status.offline(1_000).catch(() => false);
    await this.client.endAsync(!this.client.connected).catch(() => undefined);
    await this.host.dispose().catch(() => undefined);
  }

  /** `agent_*` events only to a cloud that accepts them (CLOUD_FEATURES.agentEvents), like edge/agent-link.ts. */
  private emitAgent(ev: DeviceEvent): void {
    if (!this.cloudInfo.accepts(CLOUD_FEATURES.agentEvents)) {
      this.log.warn({ type: ev.type, agent: ev.agent }, 'sim/agent-event-dropped: the cloud does not accept agent events');
      return;
    }
    this.emit(ev);
  }

  private emit(ev: DeviceEvent): void {
    this.client.publish(topics.events(this.id), encodePayload(eventSchema, ev), { qos: 1 }, (err) => {
      if (err) this.log.debug({ err: err.message, event: ev.type }, 'sim/event-publish-failed');
    });
    if (ev.type === 'installed' || ev.type === 'rolled_back') {
      this.status.publish();
      this.telemetry.publishNow();
    }
    try {
      this.opts.onEvent?.(ev);
    } catch (err) {
      this.log.error({ err }, 'sim/on-event');
    }
  }
}
