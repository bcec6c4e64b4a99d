import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import type { TrustedKey } from '../../shared/manifest/index.js';
import type { DeviceEvent } from '../../shared/protocol/index.js';
import { SimDevice } from './device.js';
import { SharedSessions } from './sessions.js';
import { planDevice, type SimShares } from './shares.js';
import { mapLimit } from '../../shared/util/map-limit.js';

/** Credentials of one simulated device (from a provisioning bundle, or none on an open broker). */
export interface SimCredentials {
  username?: string;
  password?: string;
  trustedKeys?: TrustedKey[];
}

export interface SimFleetOptions {
  devices: number;
  mqttUrl: string;
  /** Each device gets `<dataDir>/<deviceId>`. */
  dataDir: string;
  trustedKeys: readonly TrustedKey[];
  /** Device ids are `<prefix>-<0000>`; default `sim`. */
  prefix?: string;
  log?: Logger;
  /** Devices connecting at once; default 50 (a connect storm of 1,000 is what a broker restart looks like, not a start). */
  connectConcurrency?: number;
  /** Per-device credentials (e.g. `POST /v1/devices` bundles); called once per device before it is built. */
  credentials?: (deviceId: string, dir: string) => Promise<SimCredentials>;
  onEvent?: (ev: DeviceEvent) => void;
  mqttIdleTimeoutMs?: number;
  /** Telemetry heartbeat period per device; default 30 s. */
  telemetrySeconds?: number;
  /** The device indices this fleet runs (a worker's part of the whole); default 0..devices-1. */
  indices?: readonly number[];
  /** Misbehaving shares of the whole fleet, picked by device index (edge/sim/shares.ts). */
  shares?: SimShares;
  /** Agent mode: each device installs agent releases into `<agentRoot>/<deviceId>` (edge/sim/agent.ts). */
  agentRoot?: string;
  /** Agent mode: the simulated health commit's deadline; default 30 s (a failing trial waits it out). */
  agentHealthDeadlineMs?: number;
}

export interface SimFleetStats {
  devices: number;
  connected: number;
  /** Devices running a model, by release. */
  running: Record<string, number>;
  installed: number;
  rejected: number;
  rolledBack: number;
  sessions: number;
  /** Devices provisioned but kept switched off (`shares.neverConnect`). */
  neverConnect: number;
  /** Devices that were online once and are now off (`shares.switchedOff`). */
  switchedOff: number;
  /** Devices whose self-test fails (`shares.failSelfTest`). */
  failSelfTest: number;
  /** Agent mode: devices whose new agent versions never pass their health commit (`shares.failAgentTrial`). */
  failAgentTrial: number;
  /** Agent mode: devices by the agent version they run (after a committed switch, the new one). */
  agents: Record<string, number>;
}

/** Runs N {@link SimDevice}s in this process, with a shared ORT session cache. */
export class SimFleet {
  readonly sessions: SharedSessions;
  readonly devices: SimDevice[] = [];
  private readonly counts = { installed: 0, rejected: 0, rolledBack: 0 };
  private readonly plan = { neverConnect: 0, switchedOff: 0, failSelfTest: 0, failAgentTrial: 0 };
  private readonly log: Logger;

  constructor(private readonly opts: SimFleetOptions) {
    this.log = opts.log ?? silentLogger;
    this.sessions = new SharedSessions({}, this.log);
  }

  static deviceId(prefix: string, i: number): string {
    return `${prefix}-${String(i).padStart(4, '0')}`;
  }

  /**
   * Builds every device and connects them, `connectConcurrency` at a time; resolves when all connected.
   * A never-connecting device is provisioned (its credentials are fetched) but not built; a switched-off
   * one connects once, reports its status, and stops.
   */
  async start(): Promise<void> {
    const { opts } = this;
    await mkdir(opts.dataDir, { recursive: true });
    const prefix = opts.prefix ?? 'sim';
    const indices = opts.indices ?? Array.from({ length: opts.devices }, (_, i) => i);
    await mapLimit(indices, Math.max(1, opts.connectConcurrency ?? 50), async (i) => {
      const id = SimFleet.deviceId(prefix, i);
      const dir = join(opts.dataDir, id);
      const plan = planDevice(i, opts.shares ?? {});
      const cred = opts.credentials ? await opts.credentials(id, dir) : {};
      if (plan.neverConnect) {
        this.plan.neverConnect++;
        return;
      }
      if (plan.failSelfTest) this.plan.failSelfTest++;
      if (plan.failAgentTrial && opts.agentRoot) this.plan.failAgentTrial++;
      const dev = await SimDevice.create({
        deviceId: id,
        dataDir: dir,
        mqttUrl: opts.mqttUrl,
        trustedKeys: cred.trustedKeys ?? opts.trustedKeys,
        sessions: this.sessions,
        username: cred.username,
        password: cred.password,
        log: this.log.child({ device: id }),
        onEvent: (ev) => this.onEvent(ev),
        mqttIdleTimeoutMs: opts.mqttIdleTimeoutMs,
        telemetrySeconds: opts.telemetrySeconds,
        failSelfTest: plan.failSelfTest,
        agentRoot: opts.agentRoot,
        failAgentTrial: plan.failAgentTrial,
        agentHealthDeadlineMs: opts.agentHealthDeadlineMs,
      });
      await dev.start();
      await dev.waitConnected(60_000);
      if (plan.switchedOff) {
        // Online once: its status (with capabilities, once the cloud's info arrived) is out; then off for good.
        await dev.waitCloudInfo(3_000);
        await dev.stop();
        this.plan.switchedOff++;
        return;
      }
      this.devices[i] = dev;
    });
  }

  stats(): SimFleetStats {
    const running: Record<string, number> = {};
    const agents: Record<string, number> = {};
    let connected = 0;
    for (const d of this.devices) {
      if (!d) continue;
      if (d.connected) connected++;
      const r = d.running();
      if (r) running[r.release] = (running[r.release] ?? 0) + 1;
      if (d.agent) agents[d.agent.version] = (agents[d.agent.version] ?? 0) + 1;
    }
    return { devices: this.devices.filter(Boolean).length, connected, running, ...this.counts, sessions: this.sessions.stats().sessions, ...this.plan, agents };
  }

  async stop(): Promise<void> {
    const all = this.devices.filter(Boolean);
    for (let i = 0; i < all.length; i += 100) await Promise.all(all.slice(i, i + 100).map((d) => d.stop()));
  }

  private onEvent(ev: DeviceEvent): void {
    if (ev.type === 'installed') this.counts.installed++;
    else if (ev.type === 'rejected') this.counts.rejected++;
    else if (ev.type === 'rolled_back') this.counts.rolledBack++;
    this.opts.onEvent?.(ev);
  }
}

const PROVISION_ATTEMPTS = 6;

/**
 * Provisions a device through the cloud API (`POST /v1/devices`) once and keeps the bundle in its data
 * dir, so a restarted simulation reuses the same identity, like a real device with its edge.json.
 */
export function cloudCredentials(cloudUrl: string, token: string, groups: string[] = []): (id: string, dir: string) => Promise<SimCredentials> {
  return async (id, dir) => {
    const file = join(dir, 'bundle.json');
    let bundle: { mqtt: { username: string; password: string }; trustedKeys: TrustedKey[] } | undefined;
    try {
      bundle = JSON.parse(await readFile(file, 'utf8')) as typeof bundle;
    } catch {
      // A busy cloud may drop a connection or answer 5xx: retry those (a 4xx is final).
      let res: Response | undefined;
      for (let attempt = 1; ; attempt++) {
        try {
          res = await fetch(new URL('/v1/devices', cloudUrl), {
            method: 'POST',
            headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
            body: JSON.stringify({ id, groups }),
          });
          if (res.status < 500 || attempt >= PROVISION_ATTEMPTS) break;
        } catch (err) {
          if (attempt >= PROVISION_ATTEMPTS) throw new Error(`provisioning ${id}: ${(err as Error).message} (${attempt} attempts)`);
        }
        await new Promise((r) => setTimeout(r, 250 * 2 ** attempt * (0.5 + Math.random())));
      }
      if (res.status !== 201) throw new Error(`provisioning ${id}: HTTP ${res.status} ${(await res.text()).slice(0, 200)}`);
      bundle = (await res.json()) as typeof bundle;
      await mkdir(dir, { recursive: true });
      await writeFile(file, JSON.stringify(bundle), { mode: 0o600 });
    }
    return { username: bundle!.mqtt.username, password: bundle!.mqtt.password, trustedKeys: bundle!.trustedKeys };
  };
}

/** The cloud's trusted (non-retired) public keys, `GET /v1/keys`. */
export async function fetchTrustedKeys(cloudUrl: string, token: string): Promise<TrustedKey[]> {
  const res = await fetch(new URL('/v1/keys', cloudUrl), { headers: { authorization: `Bearer ${token}` } });
  if (!res.ok) throw new Error(`GET /v1/keys: HTTP ${res.status}`);
  const body = (await res.json()) as { keys: { keyId: string; status: string; publicKeyPem: string }[] };
  return body.keys.filter((k) => k.status !== 'retired').map((k) => ({ keyId: k.keyId, publicKeyPem: k.publicKeyPem }));
}
