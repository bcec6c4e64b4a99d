/**
 * The real edge daemon as systemd runs it, for the edge bench: `node bin/apprentice.js edge --config`
 * with the `Environment=` lines of deploy/systemd/apprentice-edge.service (NODE_OPTIONS included), a
 * default config (only what provisioning writes, plus the data dir and bind), and its memory read
 * from /proc/<pid>/status.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { chunkArtifact, type TrustedKey } from '../../shared/manifest/index.js';
import { topics, type SignedManifest } from '../../shared/protocol/index.js';
import { startAedes, type AedesBroker } from '../helpers/aedes.js';
import { freePort, waitFor } from '../helpers/net.js';

/** `Environment=K=V` and `Environment="K=V"` lines of a unit file (comments skipped). */
export function unitEnvironment(unitFile: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of readFileSync(unitFile, 'utf8').split('\n')) {
    const m = /^Environment=(.*)$/.exec(line.trim());
    if (!m) continue;
    const kv = m[1]!.replace(/^"(.*)"$/, '$1');
    const i = kv.indexOf('=');
    env[kv.slice(0, i)] = kv.slice(i + 1).replace(/^"(.*)"$/, '$1');
  }
  return env;
}

/** The unit's ExecStart arguments after the node binary, with /opt/apprentice → `root` and the config file replaced. */
export function unitExecArgs(unitFile: string, root: string, configFile: string): string[] {
  const line = readFileSync(unitFile, 'utf8').split('\n').find((l) => l.startsWith('ExecStart='));
  if (!line) throw new Error(`${unitFile} has no ExecStart`);
  const args = line.slice('ExecStart='.length).trim().split(/\s+/).slice(1);
  return args.map((a, i) => (args[i - 1] === '--config' ? configFile : a.replace(/^\/opt\/apprentice\//, `${root}/`)));
}

export interface ProcMemory {
  /** Anonymous resident memory (heap, malloc arenas, ORT), MB. */
  rssAnonMB: number;
  /** File-backed resident pages (code, mapped libraries), MB. */
  rssFileMB: number;
  rssMB: number;
  /** Peak RSS over the process's life (the kernel's high-water mark), MB. */
  hwmMB: number;
}

export async function procMemory(pid: number): Promise<ProcMemory> {
  const s = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN) / 1024;
  const r = (x: number) => Math.round(x * 10) / 10;
  return { rssAnonMB: r(kb('RssAnon')), rssFileMB: r(kb('RssFile')), rssMB: r(kb('VmRSS')), hwmMB: r(kb('VmHWM')) };
}

/** Samples a process's memory every `everyMs` and keeps the maxima. */
export function sampleMemory(pid: number, everyMs = 100): { stop(): Promise<{ samples: number; maxRssAnonMB: number; maxRssMB: number }> } {
  let samples = 0;
  let maxRssAnonMB = 0;
  let maxRssMB = 0;
  const tick = () =>
    procMemory(pid)
      .then((m) => {
        samples++;
        maxRssAnonMB = Math.max(maxRssAnonMB, m.rssAnonMB);
        maxRssMB = Math.max(maxRssMB, m.rssMB);
      })
      .catch(() => undefined);
  const timer = setInterval(() => void tick(), everyMs);
  return {
    async stop() {
      clearInterval(timer);
      await tick();
      return { samples, maxRssAnonMB, maxRssMB };
    },
  };
}

export interface RunningDaemon {
  child: ChildProcess;
  port: number;
  apiUrl: string;
  env: Record<string, string>;
  deviceId: string;
  /** The bench's "cloud" client on the broker (publishes further releases, reads telemetry). */
  client: mqtt.MqttClient;
  stop(): Promise<void>;
}

/**
 * Starts a broker, the daemon (unit environment, default config) and rolls the release out to it
 * (retained chunks, then the desired manifest, as the cloud does); resolves once /readyz says 200.
 */
export async function startDaemonWithRelease(o: { root: string; dataDir: string; signed: SignedManifest; bytes: Buffer; trustedKeys: TrustedKey[]; extraConfig?: Record<string, unknown>; extraEnv?: Record<string, string> }): Promise<RunningDaemon> {
  const broker: AedesBroker = await startAedes();
  const deviceId = `bench-${process.pid}`;
  const port = await freePort();
  const config = { version: 1, deviceId, dataDir: o.dataDir, mqtt: { url: broker.url, username: deviceId }, trustedKeys: o.trustedKeys, api: { bind: `127.0.0.1:${port}` }, ...o.extraConfig };
  const configFile = join(o.dataDir, '..', `edge-${deviceId}.json`);
  await writeFile(configFile, JSON.stringify(config));
  const unit = join(o.root, 'deploy/systemd/apprentice-edge.service');
  const env = { ...unitEnvironment(unit), ...o.extraEnv };
  const child = spawn(process.execPath, unitExecArgs(unit, o.root, configFile), {
    cwd: o.root,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', APPRENTICE_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const client = await mqtt.connectAsync(broker.url, { clientId: `bench-cloud-${process.pid}` });
  const stop = async () => {
    if (child.exitCode === null) child.kill('SIGTERM');
    await exited;
    await client.endAsync(true).catch(() => undefined);
    await broker.stop();
  };
  try {
    const m = o.signed.manifest;
    const chunks = chunkArtifact(o.bytes, m.artifact.chunkSize);
    for (const [i, c] of chunks.entries()) await client.publishAsync(topics.artifactChunk(m.artifact.sha256, i), c, { qos: 1, retain: true });
    await client.publishAsync(topics.desired(deviceId), JSON.stringify(o.signed), { qos: 1, retain: true });
    const apiUrl = `http://127.0.0.1:${port}`;
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`daemon exited with ${child.exitCode}`);
        return (await fetch(`${apiUrl}/readyz`).catch(() => undefined))?.status === 200;
      },
      120_000,
      { intervalMs: 100, message: 'daemon serving the release' },
    ).catch((err: unknown) => {
      // A daemon that died will not come up: fail at once rather than after the timeout.
      throw child.exitCode !== null ? new Error(`daemon exited with ${child.exitCode} before serving`) : err;
    });
    return { child, port, apiUrl, env, deviceId, client, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
