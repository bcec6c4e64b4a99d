/**
 * Shared pieces of the edge daemon integration tests: a config builder, a "cloud" MQTT client that
 * records what devices send, a TCP proxy that cuts the device's network, and a daemon child process.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectAsync, type MqttClient } from 'mqtt';
import { parseEdgeConfig, type EdgeConfig, type EdgeConfigInput } from '../../../edge/config/index.js';
import { EdgeDaemon } from '../../../edge/daemon.js';
import { createLogger, silentLogger } from '../../../shared/log/index.js';
import type { SigningKey } from '../../../shared/manifest/index.js';
import {
  decodePayload,
  eventSchema,
  examplesBatchSchema,
  parseTopic,
  statusSchema,
  telemetrySchema,
  topics,
  type DeviceEvent,
  type ExamplesBatch,
  type Status,
  type Telemetry,
} from '../../../shared/protocol/index.js';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { clearRetained, trustedKeysOf } from '../../fixtures/edge-release.js';
import { REPO_ROOT } from '../../helpers/cli.js';
import { findExecutable, freePort, waitFor, type BrokerCase, type TestBroker } from '../../helpers/broker.js';

export const newDeviceId = (): string => `edge-${randomBytes(4).toString('hex')}`;

export async function tempDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'apprentice-edge-'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? (T[K] extends unknown[] ? T[K] : DeepPartial<T[K]>) : T[K] };

/** A raw edge.json for tests: quick reconnects, API on a free port, selection off unless asked. */
export function edgeConfigInput(o: { deviceId: string; mqttUrl: string; dataDir: string; key: SigningKey } & DeepPartial<Omit<EdgeConfigInput, 'deviceId' | 'dataDir'>>): EdgeConfigInput {
  const { deviceId, mqttUrl, dataDir, key, mqtt, api, selection, runtime, updates, outbox, ...rest } = o;
  return {
    version: 1,
    deviceId,
    dataDir,
    mqtt: { url: mqttUrl, reconnectMs: 200, keepaliveSeconds: 5, connectTimeoutMs: 2000, ...mqtt },
    trustedKeys: trustedKeysOf(key),
    api: { bind: '127.0.0.1:0', ...api },
    selection: { lowConfidence: { enabled: false }, lowMargin: { enabled: false }, highEntropy: { enabled: false }, audit: { rate: 0 }, ...selection },
    runtime: { ...runtime },
    updates: { mqttIdleTimeoutMs: 10_000, retryInitialMs: 500, retryMaxMs: 2_000, ...updates },
    outbox: { backoff: { initialMs: 100, maxMs: 1000 }, ackTimeoutMs: 5_000, ...outbox },
    ...rest,
  } as EdgeConfigInput;
}

export function edgeConfig(o: Parameters<typeof edgeConfigInput>[0]): EdgeConfig {
  return parseEdgeConfig(edgeConfigInput(o));
}

const testLog = () => (process.env.APPRENTICE_TEST_LOG ? createLogger({ name: 'edge-test', level: process.env.APPRENTICE_TEST_LOG }) : silentLogger);

export async function startDaemon(config: EdgeConfig): Promise<EdgeDaemon> {
  const d = await EdgeDaemon.create(config, { log: testLog(), env: {} });
  await d.start();
  return d;
}

/** What a cloud sees of one device: status (retained), events, examples, telemetry. */
export class Cloud {
  readonly events: DeviceEvent[] = [];
  readonly statuses: Status[] = [];
  readonly batches: ExamplesBatch[] = [];
  readonly telemetry: Telemetry[] = [];
  /** Payloads that failed their schema: must stay empty. */
  readonly invalid: Array<{ topic: string; error: string }> = [];

  private constructor(readonly client: MqttClient, readonly deviceId: string) {
    client.on('message', (topic, payload) => {
      const t = parseTopic(topic);
      if (t?.type !== 'device' || t.deviceId !== deviceId || payload.length === 0) return;
      try {
        if (t.kind === 'events') this.events.push(decodePayload(eventSchema, payload));
        else if (t.kind === 'status') this.statuses.push(decodePayload(statusSchema, payload));
        else if (t.kind === 'examples') this.batches.push(decodePayload(examplesBatchSchema, payload));
        else if (t.kind === 'telemetry') this.telemetry.push(decodePayload(telemetrySchema, payload));
      } catch (err) {
        this.invalid.push({ topic, error: (err as Error).message });
      }
    });
  }

  /** Connects and subscribes to the device's topics (a persistent session when `clientId` is given). */
  static async connect(url: string, deviceId: string): Promise<Cloud> {
    const client = await connectAsync(url, { clientId: `cloud-${randomBytes(4).toString('hex')}`, reconnectPeriod: 100, connectTimeout: 5000 });
    const cloud = new Cloud(client, deviceId);
    await client.subscribeAsync(['status', 'events', 'examples', 'telemetry'].map((k) => topics.device(deviceId, k as 'status')), { qos: 1 });
    return cloud;
  }

  exampleIds(): string[] {
    return this.batches.flatMap((b) => b.examples.map((e) => e.id));
  }

  lastStatus(): Status | undefined {
    return this.statuses[this.statuses.length - 1];
  }

  waitEvent(pred: (e: DeviceEvent) => boolean, timeoutMs = 15_000, message = 'device event'): Promise<DeviceEvent> {
    return waitFor(() => this.events.find(pred), timeoutMs, { message });
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }
}

/** Reads the retained status of a device with a fresh client. */
export async function retainedStatus(url: string, deviceId: string, timeoutMs = 3000): Promise<Status | undefined> {
  const client = await connectAsync(url, { clientId: `peek-${randomBytes(4).toString('hex')}`, reconnectPeriod: 0 });
  try {
    const got = new Promise<Status | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), timeoutMs);
      client.on('message', (topic, payload, packet) => {
        if (topic !== topics.status(deviceId) || !packet.retain || payload.length === 0) return;
        clearTimeout(timer);
        resolve(decodePayload(statusSchema, payload));
      });
    });
    await client.subscribeAsync(topics.status(deviceId), { qos: 1 });
    return await got;
  } finally {
    await client.endAsync(true);
  }
}

/** A TCP relay between the device and the broker whose link can be cut and restored (a network outage). */
export interface NetworkCut {
  url: string;
  cut(): Promise<void>;
  restore(): Promise<void>;
  stop(): Promise<void>;
}

export async function startNetworkCut(brokerPort: number): Promise<NetworkCut> {
  const port = await freePort();
  const sockets = new Set<net.Socket>();
  let server: net.Server | undefined;
  const listen = () =>
    new Promise<void>((resolve, reject) => {
      const srv = net.createServer((inbound) => {
        const outbound = net.connect({ port: brokerPort, host: '127.0.0.1' });
        for (const s of [inbound, outbound]) {
          sockets.add(s);
          s.once('close', () => sockets.delete(s));
          s.on('error', () => undefined);
        }
        inbound.pipe(outbound).pipe(inbound);
        inbound.once('close', () => outbound.destroy());
        outbound.once('close', () => inbound.destroy());
      });
      srv.once('error', reject);
      srv.listen({ port, host: '127.0.0.1' }, () => resolve());
      server = srv;
    });
  const unlisten = async () => {
    const srv = server;
    server = undefined;
    if (!srv) return;
    const closed = new Promise<void>((r) => srv.close(() => r()));
    for (const s of sockets) s.destroy();
    await closed;
  };
  await listen();
  return { url: `mqtt://127.0.0.1:${port}`, cut: unlisten, restore: listen, stop: unlisten };
}

/** `POST /v1/predict` with one model input (already scaled). */
export async function predict(apiUrl: string, input: readonly number[]): Promise<{ status: number; body: { release?: number; probabilities?: number[]; confidence?: number; id?: string; error?: unknown } }> {
  const res = await fetch(`${apiUrl}/v1/predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ input }) });
  return { status: res.status, body: (await res.json()) as never };
}

export async function readyz(apiUrl: string): Promise<{ status: number; release?: number }> {
  const res = await fetch(`${apiUrl}/readyz`);
  const body = (await res.json()) as { release?: number };
  return { status: res.status, release: body.release };
}

/** The daemon as systemd runs it: `node --import tsx bin/main.ts edge --config …`, as a child process. */
export class DaemonProcess {
  readonly lines: Array<Record<string, unknown>> = [];
  stderr = '';
  apiUrl: string | undefined;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  private constructor(readonly child: ChildProcess) {
    let buf = '';
    child.stderr!.on('data', (d: Buffer) => {
      const text = d.toString('utf8');
      this.stderr = (this.stderr + text).slice(-20_000);
      buf += text;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          const obj = JSON.parse(line) as Record<string, unknown>;
          this.lines.push(obj);
          if (obj.msg === 'daemon/started' && typeof obj.api === 'string') this.apiUrl = obj.api;
        } catch {
          // not a log line
        }
      }
    });
    child.stdout!.resume();
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  }

  static spawn(configPath: string, env: Record<string, string> = {}, { args = [], nodeArgs = [] }: { args?: string[]; nodeArgs?: string[] } = {}): DaemonProcess {
    const child = spawn(process.execPath, ['--import', 'tsx', ...nodeArgs, 'bin/main.ts', 'edge', '--config', configPath, ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, NOTIFY_SOCKET: '', APPRENTICE_LOG_LEVEL: 'info', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new DaemonProcess(child);
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** Waits for the local API (the `daemon/started` log line). */
  async started(timeoutMs = 30_000): Promise<string> {
    return waitFor(() => this.apiUrl ?? (this.child.exitCode !== null ? Promise.reject(new Error(`daemon exited: ${this.stderr}`)) : undefined), timeoutMs, { message: 'daemon started' });
  }

  logged(msg: string, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    return waitFor(() => this.lines.find((l) => l.msg === msg), timeoutMs, { message: `log line ${msg}` });
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited;
  }

  /** VmRSS of the child, in bytes (Linux). */
  async rss(): Promise<number> {
    const { readFile } = await import('node:fs/promises');
    const status = await readFile(`/proc/${this.pid}/status`, 'utf8');
    const kb = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]);
    return kb * 1024;
  }
}

export async function writeConfig(dir: string, input: EdgeConfigInput, name = 'edge.json'): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, JSON.stringify(input, null, 2));
  return path;
}

/** A stand-in for systemd's notify socket: a unix datagram listener (python3) recording each message. */
export interface NotifyListener {
  path: string;
  messages: string[];
  stop(): Promise<void>;
}

const LISTENER = `
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("ready", flush=True)
while True:
    # recv() without room for ancillary data: the fd that BARRIER=1 passes is closed by the kernel, which is
    # what releases systemd-notify's barrier wait (systemd closes it after processing the message).
    data = s.recv(65536)
    print(json.dumps(data.decode("utf-8", "replace")), flush=True)
`;

export function python3(): string | undefined {
  return findExecutable('python3');
}

export async function startNotifyListener(dir: string): Promise<NotifyListener> {
  const py = python3();
  if (!py) throw new Error('python3 not found');
  const path = join(dir, 'notify.sock');
  const child = spawn(py, ['-c', LISTENER, path], { stdio: ['ignore', 'pipe', 'pipe'] });
  const messages: string[] = [];
  let ready = false;
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString('utf8');
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line === 'ready') ready = true;
      else messages.push(JSON.parse(line) as string);
    }
  });
  await waitFor(() => ready || (child.exitCode !== null ? Promise.reject(new Error('listener exited')) : false), 5_000, { message: 'notify listener' });
  return {
    path,
    messages,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGKILL');
        await new Promise((r) => child.once('exit', r));
      }
    },
  };
}

/**
 * The set-up the edge integration tests share: one broker for the describe block, a cleanup stack emptied
 * after each test, and `device()`: a fresh device id, a temp dir and a fake cloud whose retained topics
 * (listed in `retained`) are cleared after the test.
 *
 * @example
 * const w = edgeWorld(brokerMatrix()[0]!);
 * it('...', async () => { const { deviceId, dir, cloud, retained } = await w.device(); });
 */
export function edgeWorld(broker$: BrokerCase): { readonly broker: TestBroker; cleanups: Array<() => Promise<unknown>>; device(): Promise<{ deviceId: string; dir: string; cloud: Cloud; retained: string[] }> } {
  let broker: TestBroker | undefined;
  const cleanups: Array<() => Promise<unknown>> = [];
  beforeAll(async () => {
    broker = await broker$.start();
  });
  afterAll(async () => {
    await broker?.stop();
  });
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
  });
  return {
    get broker() {
      if (!broker) throw new Error('edgeWorld: the broker starts in beforeAll');
      return broker;
    },
    cleanups,
    async device() {
      const deviceId = newDeviceId();
      const { dir, cleanup } = await tempDir();
      cleanups.push(cleanup);
      const cloud = await Cloud.connect(this.broker.url, deviceId);
      cleanups.push(() => cloud.close());
      const retained: string[] = [];
      cleanups.push(() => clearRetained(cloud.client, retained));
      return { deviceId, dir, cloud, retained };
    },
  };
}
