/**
 * Helpers of the fleet bench (fleet.bench.ts): the real cloud as its own process (`apprentice cloud`,
 * built), its CPU and memory from /proc, Mosquitto's $SYS message counters, and the rollout engine's
 * share of the cloud's CPU from a V8 CPU profile of the cloud process.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { generateSigningKey } from '../../shared/manifest/index.js';
import { freePort, sleep } from '../helpers/net.js';

export const TOKEN = 'fleet-bench-admin-token-0123456789';

export interface CloudProc {
  child: ChildProcess;
  apiUrl: string;
  dataDir: string;
  profileDir: string;
  /** Stops the cloud (SIGTERM, graceful) and resolves when it exited (the CPU profile is written then). */
  stop(): Promise<void>;
}

/** `node dist/bin/main.js cloud --config …` (what `apprentice cloud` runs), with a CPU profile. */
export async function startCloudProcess(dir: string, mqttUrl: string, tickSeconds: number): Promise<CloudProc> {
  const port = await freePort();
  const dataDir = join(dir, 'cloud');
  const profileDir = join(dir, 'profile');
  const keyFile = join(dir, 'signing-key.pem');
  writeFileSync(keyFile, generateSigningKey().privateKeyPem, { mode: 0o600 });
  const config = { dataDir, api: { bind: `127.0.0.1:${port}`, adminToken: TOKEN }, mqtt: { url: mqttUrl }, keys: { signingKeyFile: keyFile }, rounds: { tickSeconds: 3600 }, rollouts: { tickSeconds } };
  const file = join(dir, 'cloud.json');
  writeFileSync(file, JSON.stringify(config, null, 2));
  const main = resolve('dist/bin/main.js');
  const child = spawn(process.execPath, ['--cpu-prof', '--cpu-prof-dir', profileDir, main, 'cloud', '--config', file], {
    env: { ...process.env, APPRENTICE_LOG_LEVEL: process.env.BENCH_CLOUD_LOG ?? 'warn' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString('utf8')).slice(-10_000);
    if (process.env.BENCH_CLOUD_LOG) process.stderr.write(d);
  });
  const apiUrl = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`cloud exited ${child.exitCode}: ${stderr}`);
    if ((await fetch(`${apiUrl}/healthz`).catch(() => undefined))?.ok) break;
    if (Date.now() > deadline) throw new Error(`cloud API not up after 60 s: ${stderr}`);
    await sleep(200);
  }
  return {
    child,
    apiUrl,
    dataDir,
    profileDir,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 60_000);
      await exited;
      clearTimeout(t);
    },
  };
}

export async function api<T>(cloud: { apiUrl: string }, method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<T> {
  const res = await fetch(`${cloud.apiUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, ...(body !== undefined ? { 'content-type': contentType } : {}) },
    body: body === undefined ? undefined : contentType === 'application/json' ? JSON.stringify(body) : (body as Uint8Array),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status} ${text.slice(0, 300)}`);
  return JSON.parse(text) as T;
}

const TICKS_PER_SECOND = 100; // getconf CLK_TCK on Linux

/** CPU seconds (user + system) and current / peak RSS of a process, from /proc. */
export function procUsage(pid: number): { cpuSeconds: number; rssBytes: number; peakRssBytes: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpuSeconds = (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
  return { cpuSeconds, rssBytes: kb('VmRSS'), peakRssBytes: kb('VmHWM') };
}

export function loadAverage1m(): number {
  return Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
}

/** Mosquitto's $SYS counters (sys_interval 1): messages received and sent since the broker started. */
export class SysCounters {
  private latest = { received: 0, sent: 0, at: 0 };
  private constructor(private readonly client: MqttClient) {}

  static async watch(url: string): Promise<SysCounters> {
    const client = await mqtt.connectAsync(url, { clientId: `bench-sys-${process.pid}`, clean: true });
    const s = new SysCounters(client);
    client.on('message', (topic, payload) => {
      const v = Number(payload.toString('utf8'));
      if (topic.endsWith('/messages/received')) s.latest.received = v;
      else if (topic.endsWith('/messages/sent')) s.latest.sent = v;
      s.latest.at = Date.now();
    });
    await client.subscribeAsync(['$SYS/broker/messages/received', '$SYS/broker/messages/sent'], { qos: 0 });
    return s;
  }

  /** The counters after the next $SYS update (so everything published before the call is in them). */
  async read(): Promise<{ received: number; sent: number }> {
    const since = Date.now();
    while (this.latest.at <= since + 1_000) await sleep(100);
    return { received: this.latest.received, sent: this.latest.sent };
  }

  async close(): Promise<void> {
    await this.client.endAsync();
  }
}

interface ProfileNode {
  id: number;
  callFrame: { url: string; functionName: string };
  children?: number[];
}

/** Now on the clock of V8 CPU profiles (CLOCK_MONOTONIC on Linux, microseconds), comparable across processes. */
export const monotonicUs = (): number => Number(process.hrtime.bigint() / 1000n);

/**
 * CPU seconds of the cloud's V8 profile within `window` (monotonic µs; default the whole process life),
 * total and spent with a frame of `cloud/rollouts/` or `cloud/fleet/ingest` on the stack (inclusive:
 * SQLite and MQTT calls made from there count to them; ingest's applyDeviceEventSteps counts to both).
 */
export function profileBreakdown(profileDir: string, window?: { fromUs: number; toUs: number }): { sampledSeconds: number; rolloutsSeconds: number; ingestSeconds: number; idleSeconds: number; gcSeconds: number } {
  const file = readdirSync(profileDir).find((f) => f.endsWith('.cpuprofile'));
  if (!file) throw new Error(`no CPU profile in ${profileDir}`);
  const p = JSON.parse(readFileSync(join(profileDir, file), 'utf8')) as { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[]; startTime: number };
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const tag = new Map<number, { rollouts: boolean; ingest: boolean; idle: boolean; gc: boolean }>();
  const visit = (id: number, inherited: { rollouts: boolean; ingest: boolean }): void => {
    const n = byId.get(id)!;
    const url = n.callFrame.url;
    const t = { rollouts: inherited.rollouts || url.includes('/cloud/rollouts/'), ingest: inherited.ingest || url.includes('/cloud/fleet/ingest') || url.includes('/cloud/fleet/device-state-writer') };
    tag.set(id, { ...t, idle: n.callFrame.functionName === '(idle)', gc: n.callFrame.functionName === '(garbage collector)' });
    for (const c of n.children ?? []) visit(c, t);
  };
  visit(p.nodes[0]!.id, { rollouts: false, ingest: false });
  const out = { sampledSeconds: 0, rolloutsSeconds: 0, ingestSeconds: 0, idleSeconds: 0, gcSeconds: 0 };
  let at = p.startTime;
  p.samples.forEach((id, i) => {
    at += p.timeDeltas[i] ?? 0;
    if (window && (at < window.fromUs || at > window.toUs)) return;
    const dt = (p.timeDeltas[i] ?? 0) / 1e6;
    const t = tag.get(id)!;
    if (t.idle) {
      out.idleSeconds += dt;
      return;
    }
    out.sampledSeconds += dt;
    if (t.rollouts) out.rolloutsSeconds += dt;
    if (t.ingest) out.ingestSeconds += dt;
    if (t.gc) out.gcSeconds += dt;
  });
  for (const k of Object.keys(out) as (keyof typeof out)[]) out[k] = Math.round(out[k] * 100) / 100;
  return out;
}

export interface EngineCounters {
  cpuSeconds: { signal: number; step: number; total: number };
  events: { status: number; telemetry: number; event: number; total: number };
}

/**
 * The rollout engine's own counters from the cloud's GET /metrics (cloud/rollouts/meter.ts): CPU seconds
 * of engine code (signal handlers and queued steps, not the waits on publishes) and the device signals it
 * handled.
 */
export async function engineCounters(cloud: { apiUrl: string }): Promise<EngineCounters> {
  const res = await fetch(`${cloud.apiUrl}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
  if (!res.ok) throw new Error(`GET /metrics: HTTP ${res.status}`);
  const text = await res.text();
  const value = (name: string, label: string, v: string): number => {
    const m = new RegExp(`^${name}\\{${label}="${v}"\\} (\\S+)$`, 'm').exec(text);
    return m ? Number(m[1]) : 0;
  };
  const cpu = { signal: value('apprentice_rollout_engine_cpu_seconds_total', 'part', 'signal'), step: value('apprentice_rollout_engine_cpu_seconds_total', 'part', 'step') };
  const ev = { status: value('apprentice_rollout_engine_events_total', 'kind', 'status'), telemetry: value('apprentice_rollout_engine_events_total', 'kind', 'telemetry'), event: value('apprentice_rollout_engine_events_total', 'kind', 'event') };
  return { cpuSeconds: { ...cpu, total: cpu.signal + cpu.step }, events: { ...ev, total: ev.status + ev.telemetry + ev.event } };
}

/** b − a, per field. */
export function engineDelta(a: EngineCounters, b: EngineCounters): EngineCounters {
  const d = <T extends Record<string, number>>(x: T, y: T): T => Object.fromEntries(Object.keys(x).map((k) => [k, Math.round((y[k]! - x[k]!) * 1e6) / 1e6])) as T;
  return { cpuSeconds: d(a.cpuSeconds, b.cpuSeconds), events: d(a.events, b.events) };
}
