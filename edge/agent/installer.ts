import type { Logger } from '../../shared/log/index.js';
import { silentLogger } from '../../shared/log/index.js';
import type { TrustedKey } from '../../shared/manifest/index.js';
import type { AgentManifest, AgentReason, DeviceEvent } from '../../shared/protocol/index.js';
import { ArtifactFetcher } from '../updates/fetch.js';
import { UpdateError, type HttpCredentials } from '../updates/types.js';
import type { MqttClient } from 'mqtt';
import { Counter, type Registry as PromRegistry } from 'prom-client';
import { agentEvent } from './events.js';
import { AgentFloor } from './floor.js';
import { AgentLayout } from './layout.js';
import { readMarker, writeMarker } from './marker.js';
import type { SwitchStep } from './test-kill.js';
import { checkAgentManifest } from './verify.js';
import { UnpackError, unpackBundle } from './unpack.js';

export { RESTART_EXIT_CODE } from './exit-code.js';
export const DEFAULT_HEALTH_DEADLINE_MS = 120_000;
/** Starts of a new version before the launcher rolls back (StartLimitBurst=5 leaves room for the rollback start). */
export const DEFAULT_MAX_ATTEMPTS = 2;

export interface AgentInstallerDeps {
  deviceId: string;
  /** `<dataDir>/agent` (APPRENTICE_AGENT_ROOT from the launcher). */
  root: string;
  /** The version running now and the directory it runs from (the `previous` of a switch). */
  running: { version: string; dir: string };
  platform: string;
  trustedKeys: () => readonly TrustedKey[];
  /** Trusted time (the time floor's clock). */
  now: () => Date;
  /** The cloud's protocol revision (1 while unknown). */
  cloudProtocol: () => number;
  emit: (ev: DeviceEvent) => void;
  /**
   * Before refusing a release as `unknown_key`: resolves when this connection's key set has arrived (or
   * its wait ran out), as for model releases (issue 10); the manifest is then checked again.
   */
  keySetSettled?: () => Promise<void>;
  /** Called once after a completed switch: the daemon stops and exits RESTART_EXIT_CODE. */
  requestRestart: () => void;
  mqtt?: MqttClient;
  httpCredentials?: HttpCredentials;
  fetchImpl?: typeof fetch;
  mqttIdleTimeoutMs?: number;
  httpIdleTimeoutMs?: number;
  healthDeadlineMs?: number;
  maxAttempts?: number;
  log?: Logger;
  kill?: (step: SwitchStep) => void;
  /** The daemon's registry: refusals are counted there by reason (apprentice_edge_agent_rejected_total). */
  metrics?: PromRegistry;
}

export type AgentOutcome = { status: 'switched'; version: string } | { status: 'rejected'; reason: AgentReason; detail: string } | { status: 'ignored'; detail: string };

/**
 * Installs signed agent releases from `devices/{id}/agent` (issue 14): verify (signature, floor, expiry,
 * platform, upgrade path, protocol) → download through the model path's chunk and HTTP sources (same
 * sha256 + length checks, resumable, in `<root>/downloads`) → unpack and check against the signed
 * listing → switch (marker, `current` link, floor) → ask for a restart. One at a time; nothing while a
 * switch is on trial.
 */
export class AgentInstaller {
  private readonly log: Logger;
  private chain: Promise<unknown> = Promise.resolve();
  private lastRefused: string | undefined;
  private switched = false;
  /** The release being installed, for the report of an unexpected failure. */
  private inFlight: AgentManifest | null = null;
  private readonly rejected: Counter<'reason'>;

  private constructor(
    private readonly deps: AgentInstallerDeps,
    readonly layout: AgentLayout,
    private readonly floor: AgentFloor,
    private readonly fetcher: ArtifactFetcher,
  ) {
    this.log = deps.log ?? silentLogger;
    const name = 'apprentice_edge_agent_rejected_total';
    const reg = deps.metrics;
    this.rejected =
      (reg?.getSingleMetric(name) as Counter<'reason'> | undefined) ??
      new Counter({ name, help: 'Agent releases refused or failed before the switch, by reason (agent_rejected events: bad_signature, wrong_platform, not_upgradable, hash_mismatch, no_space, unpack_failed, ...)', labelNames: ['reason'] as const, registers: reg ? [reg] : [] });
  }

  static async create(deps: AgentInstallerDeps): Promise<AgentInstaller> {
    const layout = new AgentLayout(deps.root);
    await layout.ensure();
    // What an unpack that failed on a full or read-only disk (or a crash) left: `.partial` dirs, temp links.
    await layout.sweep().catch((err: unknown) => (deps.log ?? silentLogger).warn({ err, root: deps.root }, 'agent/sweep-failed: leftovers stay until the next start'));
    const floor = await AgentFloor.open(deps.root);
    const fetcher = await ArtifactFetcher.create({ dataDir: deps.root, mqtt: deps.mqtt, log: deps.log, fetchImpl: deps.fetchImpl, httpCredentials: deps.httpCredentials, mqttIdleTimeoutMs: deps.mqttIdleTimeoutMs, httpIdleTimeoutMs: deps.httpIdleTimeoutMs });
    return new AgentInstaller(deps, layout, floor, fetcher);
  }

  get agentFloor(): number {
    return this.floor.highest;
  }

  /** Handles a raw `devices/{id}/agent` payload; never rejects. */
  handle(payload: Buffer | string | unknown): Promise<AgentOutcome> {
    const run = this.chain.then(() => this.install(payload));
    this.chain = run.catch(() => undefined);
    return run.catch((err: unknown) => {
      // An unexpected failure (the data dir went read-only while pruning, say): reported like a refusal.
      this.log.error({ err }, 'agent/install-failed');
      const m = this.inFlight;
      this.inFlight = null;
      return this.refuse('unpack_failed', `${m ? `installing ${m.version}: ` : ''}${(err as Error).message}`, m);
    });
  }

  private async install(payload: unknown): Promise<AgentOutcome> {
    const { deps, layout } = this;
    if (this.switched) return { status: 'ignored', detail: 'a switch is done; waiting for the restart' };
    if (Buffer.isBuffer(payload) && payload.length === 0) return { status: 'ignored', detail: 'empty (cleared) agent topic' };
    const marker = await readMarker(deps.root);
    if (marker?.state === 'pending') return { status: 'ignored', detail: `version ${marker.pending} is on trial` };
    const check = () => checkAgentManifest(payload, { trustedKeys: deps.trustedKeys(), now: deps.now(), floor: this.floor.highest, platform: deps.platform, running: deps.running.version, cloudProtocol: deps.cloudProtocol() });
    let verdict = check();
    if (!verdict.ok && verdict.reason === 'unknown_key' && deps.keySetSettled) {
      await deps.keySetSettled();
      verdict = check();
    }
    if (!verdict.ok) {
      const m = verdict.manifest;
      // The retained release at the floor was already handled (switched to, or rolled back and reported):
      // it comes again at every reconnect; nothing to do, nothing to report.
      if (verdict.reason === 'stale_release' && m && m.agentSeq === this.floor.highest) return { status: 'ignored', detail: `agentSeq ${m.agentSeq} (${m.version}) already handled` };
      return this.refuse(verdict.reason, verdict.detail, m);
    }
    const m = verdict.manifest;
    if (m.version === deps.running.version) {
      // A re-issue of the version running (a rollback the device already did by itself): take its seq.
      await this.floor.raise(m.agentSeq);
      deps.emit(agentEvent(deps.deviceId, deps.now(), 'agent_committed', { version: m.version, agentSeq: m.agentSeq, running: m.version }, 'already running this version'));
      return { status: 'ignored', detail: `already running ${m.version}` };
    }
    this.log.info({ version: m.version, agentSeq: m.agentSeq, bytes: m.artifact.bytes }, 'agent/accepted');
    this.inFlight = m;
    let tarball: string;
    try {
      tarball = (await this.fetcher.fetch(m.artifact)).path;
    } catch (err) {
      if (err instanceof UpdateError && (err.reason === 'hash_mismatch' || err.reason === 'length_mismatch' || err.reason === 'download_failed')) return this.refuse(err.reason, err.message, m);
      throw err;
    }
    deps.kill?.('downloaded');
    const current = await layout.current();
    // At most two versions on disk: the one running stays (the rollback target), older ones go first.
    await layout.prune([current]);
    let unpacked: Awaited<ReturnType<typeof unpackBundle>>;
    try {
      unpacked = await unpackBundle(tarball, layout, m);
    } catch (err) {
      if (err instanceof UnpackError) {
        // Best effort: on a read-only disk the download stays; a later release's download replaces it.
        await this.fetcher.forget(m.artifact.sha256).catch((e: unknown) => this.log.warn({ err: e }, 'agent/forget-download-failed'));
        return this.refuse(err.reason, err.message, m);
      }
      throw err;
    }
    await this.fetcher.forget(m.artifact.sha256);
    deps.kill?.('unpacked');
    this.log.info({ version: m.version, files: unpacked.files, bytes: unpacked.bytes }, 'agent/unpacked');
    this.inFlight = null;
    deps.emit(agentEvent(deps.deviceId, deps.now(), 'agent_installed', { version: m.version, agentSeq: m.agentSeq, running: deps.running.version }));
    await this.switchTo(m, current ?? deps.running.dir);
    return { status: 'switched', version: m.version };
  }

  /** marker (pending) → `current` link → floor → restart. A crash between any two leaves a startable version. */
  private async switchTo(m: AgentManifest, previous: string): Promise<void> {
    const { deps, layout } = this;
    const deadlineMs = deps.healthDeadlineMs ?? DEFAULT_HEALTH_DEADLINE_MS;
    // The launcher's own deadline is a backstop for a version that hangs: twice the daemon's plus restarts.
    const deadline = Math.ceil(deps.now().getTime() / 1000 + (2 * deadlineMs) / 1000 + 60);
    await writeMarker(deps.root, { state: 'pending', pending: m.version, previous, previousVersion: deps.running.version, agentSeq: m.agentSeq, attempts: 0, maxAttempts: deps.maxAttempts ?? DEFAULT_MAX_ATTEMPTS, deadline, reported: false });
    deps.kill?.('marker');
    await layout.switchTo(m.version, () => deps.kill?.('link-tmp'));
    deps.kill?.('link');
    await this.floor.raise(m.agentSeq);
    deps.kill?.('floor');
    this.switched = true;
    this.log.info({ version: m.version, previous }, 'agent/switched: restarting onto the new version');
    deps.requestRestart();
  }

  private refuse(reason: AgentReason, detail: string, m: AgentManifest | null): AgentOutcome {
    this.inFlight = null;
    this.rejected.inc({ reason });
    const key = `${reason}:${m?.agentSeq ?? ''}:${m?.version ?? ''}`;
    this.log.warn({ reason, detail, version: m?.version, agentSeq: m?.agentSeq }, 'agent/rejected');
    // A retained manifest comes again at every reconnect: report a refusal once.
    if (key !== this.lastRefused) {
      this.lastRefused = key;
      this.deps.emit(agentEvent(this.deps.deviceId, this.deps.now(), 'agent_rejected', { version: m?.version ?? this.deps.running.version, agentSeq: m?.agentSeq ?? null, running: this.deps.running.version, reason }, detail));
    }
    return { status: 'rejected', reason, detail };
  }
}
