import { isAbsolute, join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import type { TrustedKey } from '../../shared/manifest/index.js';
import type { DeviceEvent } from '../../shared/protocol/index.js';
import { AgentInstaller, AgentLifecycle, readMarker, type AgentOutcome, type Marker } from '../agent/index.js';
import { agentPlatform, readAgentVersion } from '../status/index.js';

export interface SimAgentDeps {
  deviceId: string;
  /** This device's agent root (`<agent-root>/<deviceId>`), like APPRENTICE_AGENT_ROOT under the launcher. */
  root: string;
  client: MqttClient;
  trustedKeys: readonly TrustedKey[];
  cloudProtocol: () => number;
  /** Publishes an `agent_*` event (the device gates it on CLOUD_FEATURES.agentEvents). */
  emit: (ev: DeviceEvent) => void;
  /** Republishes status (it names {@link SimAgent.version}). */
  publishStatus: () => void;
  /** When the broker last acknowledged an `online` status (StatusPublisher.acknowledgedAt). */
  statusAcknowledgedAt: () => number;
  log?: Logger;
  /** Health deadline of the simulated trial; default 30 s. */
  healthDeadlineMs?: number;
  /** Every new version fails its health commit (`apprentice sim --agent-fail-rate`): rolled back after the deadline. */
  failTrial?: boolean;
}

/**
 * Agent updates of one simulated device (`apprentice sim --agent-root DIR`): the REAL edge/agent
 * AgentInstaller (verify → download through the ArtifactFetcher → unpack against the signed listing →
 * marker → switch `current`) against the device's own root. The restart it asks for is simulated in
 * process: the device "restarts" onto the version in the marker, then runs the REAL AgentLifecycle
 * (startup → trial → commit: marker committed, floor, prune, `agent_committed`) with a health check of
 * "connected, and a status naming the new version acknowledged by the broker" (the daemon's check also
 * asks its local API, which the simulator has not). A new installer is then opened for the next release.
 */
export class SimAgent {
  private installer!: AgentInstaller;
  private lifecycle: AgentLifecycle | undefined;
  private running: { version: string; dir: string };
  private readonly log: Logger;
  private stopped = false;
  /** Switches completed and committed by this device (for tests and the bench). */
  commits = 0;
  /** New versions rolled back after a failed trial and reported (for tests and the bench). */
  rollbacks = 0;

  constructor(private readonly deps: SimAgentDeps) {
    this.log = deps.log ?? silentLogger;
    this.running = { version: readAgentVersion().version, dir: process.cwd() };
  }

  get version(): string {
    return this.running.version;
  }

  get platform(): string {
    return agentPlatform();
  }

  async open(): Promise<void> {
    const { deps } = this;
    this.installer = await AgentInstaller.create({
      deviceId: deps.deviceId,
      root: deps.root,
      running: this.running,
      platform: agentPlatform(),
      trustedKeys: () => deps.trustedKeys,
      now: () => new Date(),
      cloudProtocol: deps.cloudProtocol,
      emit: deps.emit,
      requestRestart: () => void this.restart().catch((err: unknown) => this.log.error({ err }, 'sim/agent-restart-failed')),
      mqtt: deps.client,
      log: this.log,
    });
  }

  handle(payload: Buffer): Promise<AgentOutcome> {
    return this.installer.handle(payload);
  }

  /** The simulated restart: now "running" the marker's pending version, on trial until healthy. */
  private async restart(): Promise<void> {
    if (this.stopped) return;
    const { deps } = this;
    const marker = await readMarker(deps.root);
    if (marker?.state === 'rolled_back' && !marker.reported) return this.backOnPrevious(marker);
    if (!marker || marker.state !== 'pending') return;
    this.running = { version: marker.pending, dir: join(deps.root, marker.pending) };
    this.lifecycle = new AgentLifecycle({
      deviceId: deps.deviceId,
      root: deps.root,
      version: marker.pending,
      now: () => new Date(),
      emit: deps.emit,
      requestRestart: () => void this.restart(),
      healthDeadlineMs: deps.healthDeadlineMs ?? 30_000,
      pollMs: 100,
      log: this.log,
    });
    const role = await this.lifecycle.startup();
    if (role.role !== 'trial') return;
    const since = Date.now();
    // A version that never becomes healthy never reports itself either.
    if (!deps.failTrial) deps.publishStatus();
    const outcome = await this.lifecycle.trial(role.marker, async () => {
      if (deps.failTrial) return { ok: false, detail: 'simulated: this version never becomes healthy (--agent-fail-rate)' };
      if (!deps.client.connected) return { ok: false, detail: 'not connected to the broker' };
      return deps.statusAcknowledgedAt() >= since ? { ok: true, detail: 'connected, status naming the new version acknowledged' } : { ok: false, detail: 'no status acknowledged by the broker yet' };
    });
    // rolled_back: the lifecycle put `current` back and asked for a restart (backOnPrevious opens the installer).
    if (outcome !== 'committed') return;
    this.commits++;
    if (!this.stopped) await this.open();
  }

  /** The simulated restart after a failed trial: the previous version again, which reports the rollback (real AgentLifecycle.report). */
  private async backOnPrevious(marker: Marker): Promise<void> {
    const { deps } = this;
    this.running = { version: marker.previousVersion, dir: isAbsolute(marker.previous) ? marker.previous : join(deps.root, marker.previous) };
    this.lifecycle = new AgentLifecycle({ deviceId: deps.deviceId, root: deps.root, version: marker.previousVersion, now: () => new Date(), emit: deps.emit, requestRestart: () => undefined, log: this.log });
    const role = await this.lifecycle.startup();
    deps.publishStatus();
    if (role.role === 'report') {
      await this.lifecycle.report(role.marker);
      this.rollbacks++;
    }
    if (!this.stopped) await this.open();
  }

  stop(): void {
    this.stopped = true;
    this.lifecycle?.stop();
  }
}
