import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../../shared/log/index.js';
import { silentLogger } from '../../shared/log/index.js';
import type { DeviceEvent } from '../../shared/protocol/index.js';
import { agentEvent } from './events.js';
import { AgentFloor } from './floor.js';
import { AgentLayout } from './layout.js';
import { MARKER_FILE, readMarker, writeMarker, type Marker } from './marker.js';
import { DEFAULT_HEALTH_DEADLINE_MS } from './installer.js';
import type { SwitchStep } from './test-kill.js';

export interface AgentLifecycleDeps {
  deviceId: string;
  root: string;
  /** The version this process runs (read from its bundle's package.json). */
  version: string;
  now: () => Date;
  /** Resolves once an event has been handed to the connected MQTT client (the daemon's gate). */
  emit: (ev: DeviceEvent) => void | Promise<void>;
  /** Exit with RESTART_EXIT_CODE (after a health-timeout rollback put `current` back). */
  requestRestart: () => void;
  healthDeadlineMs?: number;
  /** How often the health checks are polled during a trial (default 1 s). */
  pollMs?: number;
  log?: Logger;
  kill?: (step: SwitchStep) => void;
}

/** What the daemon must show before a new version is committed (issue 14, "Health commit"). */
export type HealthCheck = () => Promise<{ ok: boolean; detail: string }>;

/** `report`: a rollback to announce (old version back), or a commit whose announcement a crash interrupted. */
export type StartupRole = { role: 'trial'; marker: Marker } | { role: 'report'; marker: Marker } | { role: 'none' };

/**
 * The daemon's side of an agent switch, at every start (the launcher's side is
 * deploy/apprentice-launcher.sh):
 * - the pending version on trial: polls the health checks until they pass within the deadline, then
 *   commits (marker → committed, floor, older versions deleted, `agent_committed`); otherwise puts
 *   `current` back on the previous version, records `health_timeout` and restarts;
 * - the previous version back after a rollback (by the launcher or by the timeout above): reports
 *   `agent_rolled_back` once, raises the floor past the failed release (its retained manifest must not
 *   install again) and deletes the failed version.
 */
export class AgentLifecycle {
  private readonly log: Logger;
  private readonly layout: AgentLayout;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private outcome: Promise<'committed' | 'rolled_back' | 'stopped'> | undefined;

  constructor(private readonly deps: AgentLifecycleDeps) {
    this.log = deps.log ?? silentLogger;
    this.layout = new AgentLayout(deps.root);
  }

  /** Reads the marker and says what this start is. An interrupted switch (the link never moved) is cleared. */
  async startup(): Promise<StartupRole> {
    const m = await readMarker(this.deps.root);
    if (!m) return { role: 'none' };
    const current = await this.layout.current();
    if (m.state === 'pending') {
      if (m.pending === this.deps.version && current === m.pending) return { role: 'trial', marker: m };
      // The switch stopped before `current` moved (or the launcher ran another bundle): nothing was tried.
      this.log.warn({ pending: m.pending, running: this.deps.version, current }, 'agent/switch-interrupted: the retained release will be installed again');
      await rm(join(this.deps.root, MARKER_FILE), { force: true });
      return { role: 'none' };
    }
    if (m.state === 'rolled_back' && !m.reported && this.deps.version !== m.pending) return { role: 'report', marker: m };
    if (m.state === 'committed' && !m.reported && this.deps.version === m.pending) return { role: 'report', marker: m };
    return { role: 'none' };
  }

  /**
   * The trial: polls `check` until it passes (→ commit) or the deadline (→ rollback + restart).
   * Resolves with the outcome.
   */
  trial(marker: Marker, check: HealthCheck): Promise<'committed' | 'rolled_back' | 'stopped'> {
    const deadlineMs = this.deps.healthDeadlineMs ?? DEFAULT_HEALTH_DEADLINE_MS;
    const started = Date.now();
    this.log.info({ version: marker.pending, deadlineMs, attempt: marker.attempts }, 'agent/trial-started');
    this.outcome ??= new Promise((resolve) => {
      let last = 'not checked yet';
      const tick = async (): Promise<void> => {
        if (this.stopped) return resolve('stopped');
        try {
          const r = await check();
          last = r.detail;
          if (r.ok) return resolve(await this.commit(marker));
        } catch (err) {
          last = (err as Error).message;
        }
        if (Date.now() - started >= deadlineMs) return resolve(await this.rollback(marker, last));
        this.timer = setTimeout(() => void tick(), this.deps.pollMs ?? 1_000);
      };
      void tick();
    });
    return this.outcome;
  }

  /** marker → committed first (a crash after it keeps the new version), then floor, prune, event, reported. */
  private async commit(marker: Marker): Promise<'committed'> {
    const committed: Marker = { ...marker, state: 'committed', reported: false };
    await writeMarker(this.deps.root, committed);
    this.deps.kill?.('commit-marker');
    await this.announceCommit(committed);
    return 'committed';
  }

  private async announceCommit(marker: Marker): Promise<void> {
    await (await AgentFloor.open(this.deps.root)).raise(marker.agentSeq);
    const removed = await this.layout.prune([marker.pending, marker.previous]);
    this.log.info({ version: marker.pending, previous: marker.previous, removed }, 'agent/committed');
    await this.deps.emit(agentEvent(this.deps.deviceId, this.deps.now(), 'agent_committed', { version: marker.pending, agentSeq: marker.agentSeq, running: this.deps.version }));
    await writeMarker(this.deps.root, { ...marker, reported: true });
  }

  private async rollback(marker: Marker, detail: string): Promise<'rolled_back'> {
    this.log.error({ version: marker.pending, previous: marker.previous, detail }, 'agent/health-timeout: rolling back');
    await this.layout.switchTo(marker.previous);
    await writeMarker(this.deps.root, { ...marker, state: 'rolled_back', reason: 'health_timeout', reported: false });
    this.deps.requestRestart();
    return 'rolled_back';
  }

  /** The old version is back: report the failed release once, keep it from installing again, delete it. */
  async report(marker: Marker): Promise<void> {
    if (marker.state === 'committed') return this.announceCommit(marker);
    const reason = marker.reason ?? 'start_failed';
    await (await AgentFloor.open(this.deps.root)).raise(marker.agentSeq);
    await this.deps.emit(agentEvent(this.deps.deviceId, this.deps.now(), 'agent_rolled_back', { version: marker.pending, agentSeq: marker.agentSeq, running: this.deps.version, reason }, `version ${marker.pending} ${reason === 'health_timeout' ? 'was not healthy in time' : 'failed to start'}; back on ${this.deps.version}`));
    await writeMarker(this.deps.root, { ...marker, reported: true });
    const current = await this.layout.current();
    await this.layout.prune([current]);
    this.log.warn({ version: marker.pending, reason, running: this.deps.version }, 'agent/rolled-back-reported');
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }
}
