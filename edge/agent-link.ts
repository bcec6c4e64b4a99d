import type { MqttClient } from 'mqtt';
import { Counter, type Registry } from 'prom-client';
import { silentLogger, type Logger } from '../shared/log/index.js';
import { CLOUD_FEATURES, topics, type DeviceEvent } from '../shared/protocol/index.js';
import { ConfigError, type EdgeConfig } from './config/index.js';
import { AgentInstaller, AgentLifecycle, checkDataFormats, DataFormatError, testKiller, type HealthCheck, type StartupRole } from './agent/index.js';
import { agentPlatform, readAgentVersion } from './status/agent-version.js';
import { CLOUD_INFO_WAIT_MS } from './status/event-gate.js';
import type { TrustLink } from './trust-link.js';

export interface AgentLinkDeps {
  config: EdgeConfig;
  client: MqttClient;
  link: TrustLink;
  env: NodeJS.ProcessEnv;
  /** Stop the daemon and exit RESTART_EXIT_CODE (the unit restarts it onto the new `current`). */
  onRestart: () => void;
  httpCredentials?: { username: string; password: string };
  log?: Logger;
  /** The daemon's registry: agent events an older cloud cannot read are counted there. */
  metrics?: Registry;
}

/**
 * Agent updates in the daemon (issue 14), out of its composition root like trust-link.ts. Enabled only
 * when the daemon runs under the fixed launcher (deploy/apprentice-launcher.sh sets
 * APPRENTICE_AGENT_ROOT): only then does it declare `agent-update`, follow `devices/{id}/agent`, and run
 * the start-time trial or report. The data-format check runs in every case.
 */
export class AgentLink {
  private installer: AgentInstaller | undefined;
  private lifecycle: AgentLifecycle | undefined;
  private reported = false;
  private readonly log: Logger;
  private readonly droppedEvents: Counter<'type'> | undefined;
  readonly topic: string;
  readonly version = readAgentVersion().version;

  private constructor(
    private readonly deps: AgentLinkDeps,
    readonly role: StartupRole,
  ) {
    this.log = deps.log ?? silentLogger;
    this.topic = topics.agent(deps.config.deviceId);
    const reg = deps.metrics;
    this.droppedEvents = reg
      ? ((reg.getSingleMetric('apprentice_edge_agent_events_dropped_total') as Counter<'type'> | undefined) ??
        new Counter({ name: 'apprentice_edge_agent_events_dropped_total', help: 'agent_* events not sent because the cloud does not accept events.agent (logged as agent/event-dropped)', labelNames: ['type'] as const, registers: [reg] }))
      : undefined;
  }

  static async open(deps: AgentLinkDeps): Promise<AgentLink> {
    const root = deps.env.APPRENTICE_AGENT_ROOT;
    const log = (deps.log ?? silentLogger).child({ module: 'edge/agent' });
    const a = deps.config.agent;
    let holder: AgentLink | undefined;
    const emit = (ev: DeviceEvent): Promise<void> => (holder ? holder.emit(ev) : Promise.resolve());
    const lifecycle: AgentLifecycle | undefined = root
      ? new AgentLifecycle({ deviceId: deps.config.deviceId, root, version: readAgentVersion().version, now: () => deps.link.floor.now(), emit, requestRestart: deps.onRestart, healthDeadlineMs: a.healthDeadlineSeconds * 1000, log, kill: testKiller(deps.env, log) })
      : undefined;
    const role: StartupRole = lifecycle ? await lifecycle.startup() : { role: 'none' };
    try {
      await checkDataFormats(deps.config.dataDir, { record: role.role !== 'trial' });
    } catch (err) {
      if (err instanceof DataFormatError) throw new ConfigError([`dataDir: ${err.message}`]);
      throw err;
    }
    const self = new AgentLink({ ...deps, log }, role);
    holder = self;
    self.lifecycle = lifecycle;
    if (root) {
      self.installer = await AgentInstaller.create({
        deviceId: deps.config.deviceId,
        root,
        running: { version: self.version, dir: deps.env.APPRENTICE_AGENT_DIR ?? process.cwd() },
        platform: agentPlatform(),
        trustedKeys: () => deps.link.trust.trustedKeys(),
        now: () => deps.link.floor.now(),
        cloudProtocol: () => deps.link.cloudProtocol(),
        emit: (ev) => void emit(ev),
        keySetSettled: () => deps.link.keySetSettled(),
        requestRestart: deps.onRestart,
        mqtt: deps.client,
        ...(deps.metrics ? { metrics: deps.metrics } : {}),
        httpCredentials: deps.httpCredentials,
        mqttIdleTimeoutMs: deps.config.updates.mqttIdleTimeoutMs,
        httpIdleTimeoutMs: deps.config.updates.httpIdleTimeoutMs,
        healthDeadlineMs: a.healthDeadlineSeconds * 1000,
        maxAttempts: a.maxAttempts,
        log,
        kill: testKiller(deps.env, log),
      });
      log.info({ version: self.version, role: role.role, root }, 'agent/layout');
    }
    return self;
  }

  /** Whether this daemon installs agent releases (status capability `agent-update`). */
  get enabled(): boolean {
    return this.installer !== undefined;
  }

  /** Topics to subscribe to on every connect. */
  get topicsToFollow(): string[] {
    return this.enabled ? [this.topic] : [];
  }

  /** A message on a followed topic; false when not ours. */
  handleMessage(topic: string, payload: Buffer): boolean {
    if (topic !== this.topic || !this.installer) return false;
    void this.installer.handle(payload).then((outcome) => this.log.info({ outcome }, 'agent/outcome'));
    return true;
  }

  /** After the daemon started: the trial's health checks, or (on the first connect) the rollback report. */
  start(check: HealthCheck): void {
    const r = this.role;
    if (r.role === 'trial') void this.lifecycle!.trial(r.marker, check).then((o) => this.log.info({ outcome: o }, 'agent/trial-ended'));
  }

  /** Every connect: report a rollback once the old version is back on the broker. */
  connected(): void {
    const r = this.role;
    if (r.role !== 'report' || this.reported) return;
    this.reported = true;
    void this.lifecycle!.report(r.marker).catch((err: unknown) => {
      this.reported = false;
      this.log.error({ err }, 'agent/report-failed');
    });
  }

  stop(): void {
    this.lifecycle?.stop();
  }

  /**
   * `agent_*` events go only to a cloud that accepts them (CLOUD_FEATURES.agentEvents): waits for the
   * cloud's retained info (at most CLOUD_INFO_WAIT_MS), then sends, or logs and drops.
   */
  private async emit(ev: DeviceEvent): Promise<void> {
    const { link } = this.deps;
    const until = Date.now() + CLOUD_INFO_WAIT_MS;
    while (!link.accepts(CLOUD_FEATURES.agentEvents) && Date.now() < until && !(this.deps.client.connected && link.cloudProtocol() > 1)) {
      await new Promise((r) => setTimeout(r, 200));
    }
    if (!link.accepts(CLOUD_FEATURES.agentEvents)) {
      this.log.warn({ type: ev.type, agent: ev.agent }, 'agent/event-dropped: the cloud does not accept agent events');
      this.droppedEvents?.inc({ type: ev.type });
      return;
    }
    link.emit(ev);
  }
}

/** What the health commit looks at in the daemon. */
export interface DaemonHealthParts {
  client: MqttClient;
  /** Whether a model was restored at start (then it must be loaded and /readyz must answer 200). */
  expectModel: boolean;
  modelReady: () => boolean;
  apiUrl: () => string | undefined;
  /** When the broker last acknowledged an `online` status (StatusPublisher.acknowledgedAt). */
  statusAcknowledgedAt: () => number;
}

/**
 * The health commit's checks (issue 14): connected to the broker, the model loaded (when there was one),
 * the local API answering /readyz (or /healthz on a device without a model yet), and a status naming
 * this version acknowledged by the broker since the trial started.
 */
export function daemonHealthCheck(parts: DaemonHealthParts, since = Date.now()): HealthCheck {
  return async () => {
    if (!parts.client.connected) return { ok: false, detail: 'not connected to the broker' };
    if (parts.expectModel && !parts.modelReady()) return { ok: false, detail: 'the model is not loaded' };
    const base = parts.apiUrl();
    if (!base) return { ok: false, detail: 'the local API is not serving' };
    const url = `${base}${parts.expectModel ? '/readyz' : '/healthz'}`;
    const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
    await res.body?.cancel();
    if (!res.ok) return { ok: false, detail: `${url} answered ${res.status}` };
    if (parts.statusAcknowledgedAt() < since) return { ok: false, detail: 'no status acknowledged by the broker yet' };
    return { ok: true, detail: 'connected, model loaded, API ready, status published' };
  };
}
