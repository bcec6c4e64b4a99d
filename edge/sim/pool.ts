import { fork, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { TrustedKey } from '../../shared/manifest/index.js';
import type { DeviceEvent } from '../../shared/protocol/index.js';
import type { SimFleetStats } from './fleet.js';
import type { SimShares } from './shares.js';
import type { WorkerInit, WorkerMessage } from './worker.js';

export interface SimPoolOptions {
  devices: number;
  /** Worker processes; default the core count (never more than the devices). */
  workers?: number;
  mqttUrl: string;
  dataDir: string;
  trustedKeys: TrustedKey[];
  /** Provision each device through the cloud API (POST /v1/devices) instead of `trustedKeys`. */
  cloud?: { url: string; token: string; groups?: string[] };
  prefix?: string;
  /** Devices connecting at once, per worker; default 50. */
  connectConcurrency?: number;
  shares?: SimShares;
  mqttIdleTimeoutMs?: number;
  telemetrySeconds?: number;
  /** Log level of the workers (stderr); default warn. */
  logLevel?: string;
  /** Every device event, forwarded from the workers. */
  onEvent?: (ev: DeviceEvent) => void;
  /** How often each worker reports its stats; default 500 ms. */
  statsMs?: number;
  /** Agent mode (edge/sim/agent.ts): agent releases installed into `<agentRoot>/<deviceId>`. */
  agentRoot?: string;
}

interface WorkerState {
  proc: ChildProcess;
  stats?: SimFleetStats;
  cpuSeconds: number;
  rssBytes: number;
  stderr: string;
}

/** The worker entry: worker.js when built, worker.ts through the tsx loader from source (tests). */
function workerEntry(): { path: string; execArgv: string[] } {
  const fromSource = import.meta.url.endsWith('.ts');
  const path = fileURLToPath(new URL(fromSource ? './worker.ts' : './worker.js', import.meta.url));
  if (!fromSource) return { path, execArgv: [] };
  return { path, execArgv: ['--import', pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href] };
}

/**
 * `apprentice sim` over worker processes: device i runs in worker i mod W, each device with its own
 * MQTT connection, data dir and the real edge update code (SimDevice). A worker shares one ORT session
 * per artifact among its devices, nothing else.
 */
export class SimPool {
  readonly workers: number;
  private readonly ws: WorkerState[] = [];
  private stopping = false;

  constructor(private readonly opts: SimPoolOptions) {
    const w = opts.workers ?? availableParallelism();
    if (!Number.isSafeInteger(w) || w < 1) throw new RangeError(`workers: expected a positive integer, got ${w}`);
    this.workers = Math.min(w, opts.devices);
  }

  /** Forks the workers and resolves when every device that should connect is connected. */
  async start(): Promise<void> {
    const { opts } = this;
    const entry = workerEntry();
    const started: Promise<void>[] = [];
    for (let w = 0; w < this.workers; w++) {
      const proc = fork(entry.path, [], { execArgv: entry.execArgv, stdio: ['ignore', 'inherit', 'pipe', 'ipc'], serialization: 'json' });
      const st: WorkerState = { proc, cpuSeconds: 0, rssBytes: 0, stderr: '' };
      this.ws.push(st);
      proc.stderr!.on('data', (d: Buffer) => {
        st.stderr = (st.stderr + d.toString('utf8')).slice(-4_000);
        process.stderr.write(d);
      });
      started.push(
        new Promise<void>((resolve, reject) => {
          proc.on('message', (m: WorkerMessage) => {
            if (m.type === 'started') {
              st.stats = m.stats;
              resolve();
            } else if (m.type === 'stats') {
              st.stats = m.stats;
              st.cpuSeconds = m.cpuSeconds;
              st.rssBytes = m.rssBytes;
            } else if (m.type === 'event') opts.onEvent?.(m.event);
            else if (m.type === 'error') reject(new Error(`sim worker ${w}: ${m.message}`));
          });
          proc.once('exit', (code, signal) => {
            if (!this.stopping) reject(new Error(`sim worker ${w} exited (${code ?? signal}) ${st.stderr.slice(-500)}`));
          });
        }),
      );
      const init: WorkerInit = {
        type: 'init',
        worker: w,
        workers: this.workers,
        devices: opts.devices,
        mqttUrl: opts.mqttUrl,
        dataDir: opts.dataDir,
        trustedKeys: opts.trustedKeys,
        cloud: opts.cloud ? { url: opts.cloud.url, token: opts.cloud.token, groups: opts.cloud.groups ?? [] } : undefined,
        prefix: opts.prefix ?? 'sim',
        connectConcurrency: opts.connectConcurrency ?? 50,
        shares: opts.shares ?? {},
        mqttIdleTimeoutMs: opts.mqttIdleTimeoutMs,
        telemetrySeconds: opts.telemetrySeconds,
        logLevel: opts.logLevel ?? 'warn',
        events: opts.onEvent !== undefined,
        statsMs: opts.statsMs ?? 500,
        agentRoot: opts.agentRoot,
      };
      proc.send(init);
    }
    try {
      await Promise.all(started);
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** The workers' last reports, summed. */
  stats(): SimFleetStats & { workers: number; cpuSeconds: number; rssBytes: number } {
    const out = { devices: 0, connected: 0, running: {} as Record<string, number>, installed: 0, rejected: 0, rolledBack: 0, sessions: 0, neverConnect: 0, switchedOff: 0, failSelfTest: 0, failAgentTrial: 0, agents: {} as Record<string, number>, workers: this.ws.length, cpuSeconds: 0, rssBytes: 0 };
    for (const w of this.ws) {
      out.cpuSeconds += w.cpuSeconds;
      out.rssBytes += w.rssBytes;
      const s = w.stats;
      if (!s) continue;
      for (const k of ['devices', 'connected', 'installed', 'rejected', 'rolledBack', 'sessions', 'neverConnect', 'switchedOff', 'failSelfTest', 'failAgentTrial'] as const) out[k] += s[k] ?? 0;
      for (const [r, c] of Object.entries(s.running)) out.running[r] = (out.running[r] ?? 0) + c;
      for (const [v, c] of Object.entries(s.agents ?? {})) out.agents[v] = (out.agents[v] ?? 0) + c;
    }
    return out;
  }

  /** Asks every worker for a fresh report and resolves with the sum. */
  async refresh(timeoutMs = 5_000): Promise<ReturnType<SimPool['stats']>> {
    await Promise.all(
      this.ws.map(
        (w) =>
          new Promise<void>((resolve) => {
            if (w.proc.exitCode !== null || !w.proc.connected) return resolve();
            const t = setTimeout(done, timeoutMs);
            function done(): void {
              clearTimeout(t);
              w.proc.off('message', on);
              resolve();
            }
            const on = (m: WorkerMessage): void => {
              if (m.type === 'stats') done();
            };
            w.proc.on('message', on);
            w.proc.send({ type: 'stats' });
          }),
      ),
    );
    return this.stats();
  }

  get pids(): number[] {
    return this.ws.map((w) => w.proc.pid!).filter(Boolean);
  }

  /** Stops every worker (each stops its devices: offline status, clean disconnect). */
  async stop(timeoutMs = 60_000): Promise<void> {
    this.stopping = true;
    await Promise.all(
      this.ws.map(async (w) => {
        if (w.proc.exitCode !== null || w.proc.signalCode !== null) return;
        const exited = new Promise<void>((r) => w.proc.once('exit', () => r()));
        if (w.proc.connected) w.proc.send({ type: 'stop' });
        else w.proc.kill('SIGTERM');
        const t = setTimeout(() => w.proc.kill('SIGKILL'), timeoutMs);
        await exited;
        clearTimeout(t);
      }),
    );
  }
}
