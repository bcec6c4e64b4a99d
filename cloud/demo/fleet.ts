import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CloudClient } from './cloud-client.js';
import { sleep, type DeviceInfo } from './options.js';
import { SHIFTS, SHIFT_NAMES, type ShiftName } from './shifts.js';

/** A free loopback port (bound, read, released). */
export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

/** How to start `apprentice edge`: from dist when this module runs built, else through tsx. */
function edgeCommandLine(configFile: string): { cmd: string; args: string[] } {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith('.ts')) {
    const root = resolve(dirname(here), '../..');
    return { cmd: process.execPath, args: ['--import', 'tsx', join(root, 'bin/main.ts'), 'edge', '--config', configFile] };
  }
  const main = resolve(dirname(here), '../../bin/main.js');
  return { cmd: process.execPath, args: [main, 'edge', '--config', configFile] };
}

export interface DemoFleet {
  devices: DeviceInfo[];
  /** SIGTERM to every daemon, SIGKILL to those still running after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Provisions one device per shift through `POST /v1/devices` (the bundle becomes its edge.json, kept
 * across runs) and starts each as its own `apprentice edge` process, logging to its edge.log.
 */
export async function startFleet(o: { api: CloudClient; brokerUrl: string; dataDir: string; count: number; groupsOf?: (shift: ShiftName) => string[] }): Promise<DemoFleet> {
  const children: { child: ChildProcess; exited: Promise<void> }[] = [];
  const devices: DeviceInfo[] = [];
  const stop = async (graceMs = 10_000) => {
    for (const c of children) if (c.child.exitCode === null) c.child.kill('SIGTERM');
    await Promise.race([Promise.all(children.map((c) => c.exited)), sleep(graceMs)]);
    for (const c of children) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
  };
  try {
    for (const [i, shift] of SHIFT_NAMES.slice(0, o.count).entries()) {
      const id = `demo-${i + 1}-${shift}`;
      const dir = join(o.dataDir, 'devices', id);
      mkdirSync(dir, { recursive: true });
      const configFile = join(dir, 'edge.json');
      let bundle: Record<string, unknown>;
      if (existsSync(configFile)) {
        bundle = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
      } else {
        const r = await o.api.send<Record<string, unknown>>('POST', '/v1/devices', { id, groups: o.groupsOf?.(shift) ?? ['demo'] });
        if (r.status !== 201) throw new Error(`provisioning ${id}: ${r.status} ${JSON.stringify(r.body)} (run with --fresh to start over)`);
        bundle = r.body;
      }
      const port = await freePort();
      const mqtt = bundle.mqtt as Record<string, unknown>;
      const config = {
        version: bundle.version,
        deviceId: bundle.deviceId,
        mqtt: { url: o.brokerUrl, username: mqtt.username, password: mqtt.password, reconnectMs: 1000, keepaliveSeconds: 10 },
        trustedKeys: bundle.trustedKeys,
        // The root and the current key set, when the cloud has published one (README "Root of trust").
        ...(bundle.rootKey ? { rootKey: bundle.rootKey } : {}),
        ...(bundle.keyset ? { keyset: bundle.keyset } : {}),
        dataDir: join(dir, 'data'),
        api: { bind: `127.0.0.1:${port}`, maxBatch: 256, maxBodyBytes: 4 * 1024 * 1024 },
        telemetrySeconds: 1,
        runtime: { healthWindowSeconds: 2 },
        updates: { retryInitialMs: 1000, retryMaxMs: 10_000, mqttIdleTimeoutMs: 10_000 },
        // The demo student is tiny and its traffic shifted: select what it is unsure about, and a 5% audit sample.
        selection: { lowConfidence: { threshold: 0.9 }, lowMargin: { threshold: 0.3 }, highEntropy: { threshold: 0.35 }, audit: { rate: 0.05 }, caps: { perMinute: 10_000, perHour: 100_000 } },
      };
      writeFileSync(configFile, JSON.stringify(config, null, 2) + '\n', { mode: 0o600 });
      const logFile = join(dir, 'edge.log');
      const { cmd, args } = edgeCommandLine(configFile);
      const out = createWriteStream(logFile, { flags: 'a' });
      const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, APPRENTICE_LOG_LEVEL: process.env.APPRENTICE_LOG_LEVEL ?? 'info' } });
      child.stdout!.pipe(out, { end: false });
      child.stderr!.pipe(out, { end: false });
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      children.push({ child, exited });
      devices.push({ id, shift, shiftDescription: SHIFTS[shift].description, apiUrl: `http://127.0.0.1:${port}`, configFile, logFile });
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { devices, stop };
}
