import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { Registry } from 'prom-client';
import { silentLogger, type Logger } from '../shared/log/index.js';
import { CLOUD_FEATURES, PROTOCOL_VERSION, topics, type DeviceEvent, type ShadowTelemetry, type Telemetry } from '../shared/protocol/index.js';
import { DEFAULT_LIMITS, createLocalApi, startLocalServer, type FeedbackEvent, type LocalServer, type PredictionEvent } from './api/index.js';
import { endClient, jitterReconnects, mqttClientOptions, parseBind, readApiToken, type EdgeConfig } from './config/index.js';
import { Outbox, OutboxPublisher, OutboxWriter, SourceImages, buildExample, maxExampleBytes } from './outbox/index.js';
import { healthGateOptions, localApiLimits, publisherOptions } from './daemon-options.js';
import { registerHardExampleMetrics } from './status/metrics.js';
import { HealthGate, ModelHost, type HealthVerdict } from './runtime/index.js';
import { createSelector, type Selector } from './selection/index.js';
import { InferenceStats, StatusPublisher, TelemetryPublisher, buildTelemetry, createSdNotify, lastWill, statusExtension, statusFieldsFor, type RunningRelease, type SdNotifier } from './status/index.js';
import { TrustLink } from './trust-link.js';
import { AgentLink, daemonHealthCheck } from './agent-link.js';
import { UpdateManager, type UpdateOutcome } from './updates/index.js';
import { withTestPause } from './test-pause.js';
import { ShadowRunner, disagreementsToOutbox } from './shadow/index.js';

/**
 * The edge daemon's composition root (DESIGN.md "edge daemon", STYLE.md 1): builds every module from the
 * validated config and wires them; the modules know nothing of each other.
 *
 *   model host ◄─ health gate ◄── runs          local API ─► selector ─► outbox ─► publisher ─► MQTT
 *       ▲              │ unhealthy                  │ feedback ───────────► outbox
 *   update manager ◄───┘ rollback        MQTT desired ─► update manager ─► events ─► MQTT
 *
 * `create()` opens the data dir, the outbox, the update state and builds the MQTT client without
 * connecting; `start()` restores the last good model, serves the local API (it needs no network), tells
 * systemd READY, and only then connects to the broker (reconnecting forever); `stop()` undoes it in
 * reverse. Every handler is wrapped so one bad message or callback logs `<module>/<event>` and the
 * daemon goes on (STYLE.md 5).
 */

export interface EdgeDaemonDeps {
  log?: Logger;
  /** NOTIFY_SOCKET, WATCHDOG_USEC and the test hooks are read from here; `process.env` by default. */
  env?: NodeJS.ProcessEnv;
  /** sd_notify; built from `env` by default. */
  notifier?: SdNotifier;
  now?: () => Date;
  /** An agent update switched `current`: stop and exit RESTART_EXIT_CODE (edge/cli.ts). */
  onRestart?: () => void;
}

export interface DaemonSnapshot {
  running: RunningRelease | null;
  apiUrl: string | undefined;
  mqttConnected: boolean;
  outbox: ReturnType<Outbox['stats']>;
  /** Examples queued for the outbox and not yet committed (`pending`), and what the writer refused or lost. */
  writer: ReturnType<OutboxWriter['stats']>;
  telemetry: Telemetry;
  /** The shadow candidate's figures (or how the last one ended), whatever the cloud accepts. */
  shadow: ShadowTelemetry | undefined;
}

export class EdgeDaemon {
  private readonly log: Logger;
  private readonly env: NodeJS.ProcessEnv;
  private readonly now: () => Date;
  private readonly sd: SdNotifier;
  private readonly stats = new InferenceStats();
  private readonly selector: Selector;
  private readonly startedAt: number;
  private client!: MqttClient;
  private outbox!: Outbox;
  private writer!: OutboxWriter;
  private sources!: SourceImages;
  private host!: ModelHost;
  private gate!: HealthGate;
  private updates!: UpdateManager;
  private shadow!: ShadowRunner;
  private publisher!: OutboxPublisher;
  private status!: StatusPublisher;
  /** Time floor, root of trust, key set and cloud info followers, the event gate (edge/trust-link.ts). */
  private link!: TrustLink;
  /** Agent updates under the launcher (edge/agent-link.ts). */
  private agent!: AgentLink;
  private expectModel = false;
  private telemetry!: TelemetryPublisher;
  private app!: ReturnType<typeof createLocalApi>;
  private server: LocalServer | undefined;
  /** Set when a rollback could not complete: still serving a model the gate found unhealthy. */
  private degraded: string | undefined;
  private state: 'created' | 'started' | 'stopped' = 'created';
  private stopping: Promise<void> | undefined;

  private constructor(
    readonly config: EdgeConfig,
    deps: EdgeDaemonDeps,
  ) {
    this.log = deps.log ?? silentLogger;
    this.env = deps.env ?? process.env;
    this.now = deps.now ?? (() => new Date());
    this.sd = deps.notifier ?? createSdNotify({ env: this.env, log: this.log.child({ module: 'edge/sd-notify' }) });
    this.selector = createSelector(config.selection);
    this.startedAt = this.now().getTime();
    this.onRestart = deps.onRestart ?? (() => this.log.error('agent/restart-requested but nothing handles it'));
  }

  private readonly onRestart: () => void;

  /**
   * Opens the daemon's resources (data dir, outbox, update state) and builds its modules. Throws
   * ConfigError when an MQTT file (password, CA, certificate) cannot be read.
   *
   * @example
   * const daemon = await EdgeDaemon.create(config, { log });
   * await daemon.start();
   * process.once('SIGTERM', () => void daemon.stop());
   */
  static async create(config: EdgeConfig, deps: EdgeDaemonDeps = {}): Promise<EdgeDaemon> {
    const daemon = new EdgeDaemon(config, deps);
    try {
      await daemon.open();
    } catch (err) {
      await daemon.updates?.dispose().catch(() => undefined);
      await daemon.close();
      throw err;
    }
    return daemon;
  }

  private async open(): Promise<void> {
    const { config, log } = this;
    const id = config.deviceId;
    await mkdir(config.dataDir, { recursive: true });
    const options = await mqttClientOptions(config, lastWill(id, null, this.now()));
    this.client = mqtt.connect(config.mqtt.url, options); // manualConnect: no I/O until start()
    // A fleet that lost its broker together must not come back in lockstep (issue 8): from reconnectMs up
    // to 16× it (5 s → 80 s with the default), jittered.
    jitterReconnects(this.client, { initialMs: config.mqtt.reconnectMs, maxMs: config.mqtt.reconnectMs * 16 });
    const o = config.outbox;
    this.outbox = await Outbox.create({ path: join(config.dataDir, 'outbox.db'), maxRows: o.maxRows, maxBytes: o.maxBytes, maxExampleBytes: maxExampleBytes(config.mqtt.maxPacketBytes, id), log: log.child({ module: 'edge/outbox' }) });
    this.writer = new OutboxWriter({ outbox: this.outbox, ...o.write, log: log.child({ module: 'edge/outbox' }) });
    this.sources = new SourceImages({ maxBytes: o.sourceImageMaxBytes, maxPixels: DEFAULT_LIMITS.maxImagePixels, log: log.child({ module: 'edge/outbox' }) });
    const rt = config.runtime;
    this.gate = new HealthGate({
      ...healthGateOptions(rt),
      onUnhealthy: (v) => this.guard('health/unhealthy', () => this.onUnhealthy(v)),
      onCommitted: (v) => this.guard('health/committed', () => this.onCommitted(v)),
      log: log.child({ module: 'edge/health' }),
    });
    const gate = this.gate;
    const stats = this.stats;
    this.host = new ModelHost({
      sessionOptions: { intraOpNumThreads: rt.intraOpThreads, enableCpuMemArena: rt.memArena, enableMemPattern: rt.memPattern },
      // One observer feed for the health gate and the telemetry window.
      observer: { switched: (m) => gate.switched(m), observed: (o) => (stats.observed(o), gate.observed(o)) },
      log: log.child({ module: 'edge/runtime' }),
    });
    const metrics = new Registry();
    const link = (this.link = await TrustLink.open({ config, client: this.client, now: this.now, log, metrics }));
    const trust = link.trust;
    // A candidate beside the served model (issue 13 item 4): its own session, never fed to the health gate.
    this.shadow = new ShadowRunner({
      sessionOptions: { intraOpNumThreads: rt.intraOpThreads, enableCpuMemArena: rt.memArena, enableMemPattern: rt.memPattern },
      now: () => link.floor.now(),
      metrics,
      onDisagreement: disagreementsToOutbox({ selector: this.selector, enqueue: (e) => this.writer.enqueue(e), accepts: (f) => link.accepts(f) }),
      log: log.child({ module: 'edge/shadow' }),
    });
    this.agent = await AgentLink.open({ config, client: this.client, link, env: this.env, onRestart: () => this.onRestart(), log, metrics, ...(options.username !== undefined && options.password !== undefined ? { httpCredentials: { username: options.username, password: String(options.password) } } : {}) });
    this.updates = await UpdateManager.create({
      deviceId: id,
      dataDir: config.dataDir,
      trustedKeys: () => trust.trustedKeys(),
      host: withTestPause(this.host, this.env, log),
      emit: (ev) => this.guard('events/emit', () => this.emitEvent(ev)),
      mqtt: this.client,
      log: log.child({ module: 'edge/updates' }),
      mqttIdleTimeoutMs: config.updates.mqttIdleTimeoutMs,
      httpIdleTimeoutMs: config.updates.httpIdleTimeoutMs,
      ...(options.username !== undefined && options.password !== undefined ? { httpCredentials: { username: options.username, password: String(options.password) } } : {}),
      retry: { initialMs: config.updates.retryInitialMs, maxMs: config.updates.retryMaxMs },
      timeFloor: link.floor,
      maxSequenceJump: config.updates.maxSequenceJump,
      requireAssignment: config.requireAssignment,
      keySetSettled: () => link.keySetSettled(),
      revokedKeys: () => link.revokedKeyIds(),
      shadow: this.shadow,
    });
    const mb = config.api.microBatch;
    registerHardExampleMetrics(metrics, { outbox: () => this.outbox, writer: () => this.writer, selector: this.selector, sources: () => this.sources });
    this.app = createLocalApi({
      host: this.host,
      metrics,
      onPrediction: (p) => this.guard('selection/prediction', () => this.onPrediction(p)),
      shadow: this.shadow,
      feedback: (f) => this.onFeedback(f),
      limits: localApiLimits(config.api),
      token: await readApiToken(config.api),
      batching: mb.enabled ? { maxBatch: mb.maxBatch, maxWaitMs: mb.maxWaitMs } : false,
      log: log.child({ module: 'edge/api' }),
    });
    this.publisher = new OutboxPublisher({
      outbox: this.outbox,
      client: this.client,
      deviceId: id,
      log: log.child({ module: 'edge/outbox' }),
      ...publisherOptions(config),
      // A row leaves only on the cloud's receipt once the cloud says it sends them (issue 9).
      receipts: () => link.accepts(CLOUD_FEATURES.receipts),
    });
    link.wire({
      // A new key set may revoke the key behind the floor or behind the model served (issue 10, "Revocation").
      trustChanged: (revoked) =>
        void this.updates.trustChanged(revoked).then(
          () => this.status.publish(),
          (err: unknown) => this.log.error({ err }, 'trust/revocation-failed'),
        ),
      cloudInfoChanged: () => this.status.publish(),
    });
    // Protocol-2 status fields go only to a cloud that said it accepts them (shared/protocol/compat.ts).
    this.status = new StatusPublisher({
      client: this.client,
      deviceId: id,
      running: () => this.running(),
      extension: () =>
        link.statusExt
          ? statusFieldsFor(statusExtension({ degraded: this.degraded ? 'rollback_failed' : this.updates.degraded, trust: trust.state(), agentUpdates: this.agent.enabled }), (f) => link.accepts(f))
          : undefined,
      log: log.child({ module: 'edge/status' }),
      now: this.now,
    });
    this.telemetry = new TelemetryPublisher({ client: this.client, deviceId: id, intervalMs: config.telemetrySeconds * 1000, collect: () => this.collectTelemetry(), log });
    this.wireMqtt();
  }

  private wireMqtt(): void {
    const { client, log } = this;
    const desired = topics.desired(this.config.deviceId);
    const receipts = topics.receipts(this.config.deviceId);
    // Without an 'error' listener an EventEmitter error (bad credentials, TLS) would crash the process.
    client.on('error', (err) => log.warn({ err: err.message, code: (err as { code?: unknown }).code }, 'mqtt/error'));
    client.on('offline', () => log.info('mqtt/offline'));
    client.on('reconnect', () => log.debug('mqtt/reconnect'));
    client.on('connect', () =>
      this.guard('mqtt/connect', () => {
        log.info({ url: this.config.mqtt.url }, 'mqtt/connected');
        // A clean session has no subscriptions: subscribe on every connect (resubscribe is off).
        this.agent.connected();
        for (const topic of [desired, receipts, ...this.agent.topicsToFollow]) {
          client.subscribe(topic, { qos: 1 }, (err, granted) => {
            if (err) log.debug({ err: err.message }, 'mqtt/subscribe-interrupted');
            else if (granted?.some((g) => g.qos === 128)) log.error({ topic }, 'mqtt/subscribe-refused: check the broker ACL');
          });
        }
      }),
    );
    client.on('message', (topic, payload) =>
      this.guard('mqtt/message', () => {
        if (topic === receipts) return this.publisher.handleReceipt(payload);
        if (this.agent.handleMessage(topic, payload)) return;
        if (topic !== desired) return; // artifact chunks are consumed by edge/updates' own listener
        void this.updates.handleDesired(payload).then((outcome: UpdateOutcome) => log.info({ outcome }, 'updates/outcome'));
      }),
    );
  }

  /** Restores the last good model, serves the local API, reports READY, then connects to the broker. */
  async start(): Promise<void> {
    if (this.state !== 'created') throw new Error(`cannot start a daemon that is ${this.state}`);
    this.state = 'started';
    // Pings from the start: loading the restored model on a slow Pi may take a while.
    this.sd.startWatchdog();
    const restored = await this.updates.restore();
    this.expectModel = restored.status === 'restored';
    this.log.info({ restored }, restored.status === 'restored' ? 'daemon/restored' : 'daemon/no-model-yet');
    const { hostname, port } = parseBind(this.config.api.bind);
    this.server = await startLocalServer({ app: this.app, hostname, port, log: this.log.child({ module: 'edge/api' }) });
    await this.sd.ready(this.statusText());
    // Listeners first, so the first CONNACK already publishes status and drains the outbox.
    this.link.start();
    this.status.start();
    this.publisher.start();
    this.telemetry.start();
    this.client.connect();
    this.agent.start(daemonHealthCheck({ client: this.client, expectModel: this.expectModel, modelReady: () => this.host.ready, apiUrl: () => this.apiUrl, statusAcknowledgedAt: () => this.status.acknowledgedAt }));
    this.log.info({ api: this.server.url, deviceId: this.config.deviceId, running: this.running() }, 'daemon/started');
  }

  /** Stops in reverse order: API, outbox publisher, updates, status (offline), MQTT, runtime, outbox. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  private async shutdown(): Promise<void> {
    const step = async (name: string, fn: () => unknown): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        this.log.error({ err }, `daemon/stop-${name}`);
      }
    };
    await step('notify', () => this.sd.stopping('stopping'));
    await step('telemetry', () => this.telemetry.stop());
    await step('agent', () => this.agent?.stop());
    await step('api', () => this.server?.stop(5_000));
    // After the API (no new examples), before the outbox closes: commit what is queued.
    await step('writer', () => this.writer.stop());
    await step('publisher', () => this.publisher.stop());
    await step('updates', () => this.updates.dispose());
    await step('status', async () => {
      this.status.stop();
      this.link.stop();
      if (await this.status.offline(2_000)) this.log.info('daemon/offline-published');
    });
    await this.close();
    this.sd.stopWatchdog();
    this.state = 'stopped';
    this.log.info('daemon/stopped');
  }

  /** Releases what `open()` acquired (also after a failed open). */
  private async close(): Promise<void> {
    if (this.client) await endClient(this.client, 3_000);
    this.gate?.dispose();
    this.writer?.stop();
    await this.shadow?.dispose().catch((err: unknown) => this.log.error({ err }, 'daemon/stop-shadow'));
    await this.host?.dispose().catch((err: unknown) => this.log.error({ err }, 'daemon/stop-runtime'));
    this.outbox?.dispose();
  }

  get apiUrl(): string | undefined {
    return this.server?.url;
  }

  /** The MQTT client (tests observe reconnects through it). */
  get mqtt(): MqttClient {
    return this.client;
  }

  snapshot(): DaemonSnapshot {
    return { running: this.running(), apiUrl: this.apiUrl, mqttConnected: this.client.connected, outbox: this.outbox.stats(), writer: this.writer.stats(), telemetry: this.collectTelemetry(), shadow: this.shadow.report() };
  }

  private running(): RunningRelease | null {
    const cur = this.host.current();
    return cur ? { model: cur.manifest.model, release: cur.manifest.release, sha256: cur.sha256 } : null;
  }

  private statusText(): string {
    const r = this.running();
    return r ? `serving ${r.model} release ${r.release}` : 'waiting for a first model';
  }

  private collectTelemetry(): Telemetry {
    return buildTelemetry({
      deviceId: this.config.deviceId,
      running: () => this.running(),
      stats: this.stats,
      // With what the writer lost to a full or read-only disk and could not record there yet.
      outbox: () => this.writer.outboxStats(),
      health: () => {
        if (!this.host.ready) return 'no_model';
        return this.degraded || this.stats.window().recentErrors > 0 ? 'degraded' : 'ok';
      },
      startedAt: this.startedAt,
      now: this.now,
      // New telemetry field: only for a cloud that accepts it (shared/protocol/compat.ts).
      shadow: () => (this.link.accepts(CLOUD_FEATURES.telemetryShadow) ? this.shadow.report() : undefined),
    });
  }

  /** Events go through the link's gate (newer reasons wait for the cloud info, edge/status/event-gate.ts). */
  private emitEvent(ev: DeviceEvent): void {
    this.link.emit(ev);
    if (ev.type === 'installed' || ev.type === 'rolled_back') {
      if (ev.type === 'installed') this.degraded = undefined;
      this.status.publish();
      void this.sd.status(this.statusText());
    }
  }

  private onUnhealthy(v: HealthVerdict): void {
    const reason = v.reason ?? 'inference_errors';
    void this.updates.rollback(reason, v.sha256).then(
      (outcome) => {
        this.log.warn({ verdict: v, outcome }, 'health/rollback');
        if (outcome.status !== 'rolled_back' && outcome.status !== 'not_current') this.degraded = outcome.detail;
      },
      (err: unknown) => this.log.error({ err }, 'health/rollback-failed'),
    );
  }

  /** The model passed its health window: tell the cloud (rollouts advance on installed + healthy). */
  private onCommitted(v: HealthVerdict): void {
    // Off trial on disk first, then told: a crash after this is not blamed on the release.
    void this.updates.commit(v.sha256).then(
      () => this.emitEvent({ v: PROTOCOL_VERSION, deviceId: this.config.deviceId, at: this.now().toISOString(), type: 'committed', model: v.model, release: v.release, sha256: v.sha256, detail: v.detail.slice(0, 1024) }),
      (err: unknown) => this.log.error({ err }, 'health/commit-failed'),
    );
  }

  /**
   * Hard-example selection on every answered example; selected ones are queued for the outbox with a
   * fresh UUID. Only queued: the writer commits them in batches after the response (issue 9, item 5).
   */
  private onPrediction(p: PredictionEvent): void {
    const hit = this.selector.select({ input: p.input, probs: p.probs });
    if (!hit) return;
    const example = { input: p.input, probs: p.probs, reason: hit.reason, model: p.manifest.model, release: p.manifest.release };
    // An image model's example carries its source image when the cloud accepts it (issue 11); the
    // re-encode is asynchronous (the request's views stay valid: nothing reuses them).
    if (p.source && this.sources.enabled && this.link.accepts(CLOUD_FEATURES.exampleSource)) {
      void this.sources.encode(p.source).then(
        (source) => this.writer.enqueue(buildExample({ ...example, source })),
        (err: unknown) => this.log.error({ err }, 'selection/source-image'),
      );
      return;
    }
    this.writer.enqueue(buildExample(example));
  }

  /**
   * A user label. The prediction id is the example UUID, so a label sent twice carries one UUID and the
   * cloud (idempotent on it) keeps it once; a hard example selected from the same prediction has its own
   * UUID, so the label is never mistaken for a duplicate of it.
   */
  private async onFeedback(f: FeedbackEvent): Promise<{ stored: boolean }> {
    // `stored: true` is a promise to the user: answered only after the writer's commit.
    const r = await this.writer.write(buildExample({ input: f.input, probs: f.probs, reason: 'feedback', label: f.label, model: f.manifest.model, release: f.manifest.release, id: f.id }));
    return { stored: r.status !== 'dropped' };
  }

  /** STYLE.md 5: a handler logs `<module>/<event>` with the error and the daemon goes on. */
  private guard(event: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.log.error({ err }, event);
    }
  }
}
