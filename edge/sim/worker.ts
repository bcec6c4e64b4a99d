/**
 * A simulator worker process (forked by SimPool): runs its part of the fleet (device index ≡ worker
 * mod workers) as a {@link SimFleet} and talks to the parent over IPC:
 * - parent → worker: `init` (WorkerInit), `stats`, `stop`;
 * - worker → parent: `started`, `stats` (every `statsMs` and on request), `event` (when asked for),
 *   `error` (then it exits 1), `stopped`.
 */
import { createLogger } from '../../shared/log/index.js';
import type { TrustedKey } from '../../shared/manifest/index.js';
import type { DeviceEvent } from '../../shared/protocol/index.js';
import { SimFleet, cloudCredentials, type SimFleetStats } from './fleet.js';
import type { SimShares } from './shares.js';

export interface WorkerInit {
  type: 'init';
  worker: number;
  workers: number;
  devices: number;
  mqttUrl: string;
  dataDir: string;
  trustedKeys: TrustedKey[];
  cloud?: { url: string; token: string; groups: string[] };
  prefix: string;
  connectConcurrency: number;
  shares: SimShares;
  mqttIdleTimeoutMs?: number;
  telemetrySeconds?: number;
  logLevel: string;
  /** Forward every device event to the parent. */
  events: boolean;
  statsMs: number;
  agentRoot?: string;
}

export type WorkerMessage =
  | { type: 'started'; worker: number; stats: SimFleetStats }
  | { type: 'stats'; worker: number; stats: SimFleetStats; cpuSeconds: number; rssBytes: number }
  | { type: 'event'; worker: number; event: DeviceEvent }
  | { type: 'error'; worker: number; message: string }
  | { type: 'stopped'; worker: number };

function send(m: WorkerMessage): void {
  if (process.connected) process.send!(m);
}

async function run(init: WorkerInit): Promise<void> {
  const log = createLogger({ name: `sim-w${init.worker}`, level: init.logLevel });
  const indices: number[] = [];
  for (let i = init.worker; i < init.devices; i += init.workers) indices.push(i);
  const fleet = new SimFleet({
    devices: init.devices,
    indices,
    mqttUrl: init.mqttUrl,
    dataDir: init.dataDir,
    trustedKeys: init.trustedKeys,
    prefix: init.prefix,
    log,
    connectConcurrency: init.connectConcurrency,
    credentials: init.cloud ? cloudCredentials(init.cloud.url, init.cloud.token, init.cloud.groups) : undefined,
    shares: init.shares,
    mqttIdleTimeoutMs: init.mqttIdleTimeoutMs,
    telemetrySeconds: init.telemetrySeconds,
    agentRoot: init.agentRoot,
    onEvent: init.events ? (event) => send({ type: 'event', worker: init.worker, event }) : undefined,
  });
  const report = (): void => {
    const u = process.cpuUsage();
    send({ type: 'stats', worker: init.worker, stats: fleet.stats(), cpuSeconds: (u.user + u.system) / 1e6, rssBytes: process.memoryUsage.rss() });
  };
  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    clearInterval(timer);
    await fleet.stop();
    send({ type: 'stopped', worker: init.worker });
    process.disconnect?.();
    process.exit(0);
  };
  const timer = setInterval(report, init.statsMs);
  process.on('message', (m: { type: string }) => {
    if (m.type === 'stats') report();
    else if (m.type === 'stop') void stop();
  });
  // The parent gone (killed): stop the devices instead of leaving them connected. A terminal's Ctrl-C
  // reaches the whole process group: the parent sends `stop`, so SIGINT is left to it.
  process.on('disconnect', () => void stop());
  process.on('SIGINT', () => undefined);
  process.on('SIGTERM', () => void stop());
  try {
    await fleet.start();
  } catch (err) {
    send({ type: 'error', worker: init.worker, message: (err as Error).message });
    await fleet.stop().catch(() => undefined);
    process.exit(1);
  }
  send({ type: 'started', worker: init.worker, stats: fleet.stats() });
}

process.once('message', (m: WorkerInit) => {
  if (m?.type !== 'init') {
    send({ type: 'error', worker: -1, message: `expected init, got ${JSON.stringify(m).slice(0, 100)}` });
    process.exit(1);
  }
  void run(m).catch((err: unknown) => {
    send({ type: 'error', worker: m.worker, message: (err as Error).message });
    process.exit(1);
  });
});
