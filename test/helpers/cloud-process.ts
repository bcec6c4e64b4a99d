import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { draftKeySet, publishKeySet } from '../../cloud/keys/keyset-file.js';
import { initRoot } from '../../cloud/keys/root.js';
import { KeyStore } from '../../cloud/keys/store.js';
import { signKeySet } from '../../shared/manifest/index.js';
import { freePort, waitFor } from './broker.js';
import { REPO_ROOT } from './cli.js';

/** `apprentice cloud --config FILE` as its own process, as the e2e tests run it (to SIGKILL it, or several). */
export interface CloudChild {
  child: ChildProcess;
  /** The last few KB of its stderr (warnings and errors: APPRENTICE_LOG_LEVEL=warn). */
  stderr(): string;
  /** False once it exited or was killed. */
  alive(): boolean;
}

/** Starts the cloud process on a config file; `env` adds to (and overrides) this process's environment. */
export function spawnCloud(configFile: string, env: Record<string, string> = {}): CloudChild {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bin/main.ts', 'cloud', '--config', configFile], {
    cwd: REPO_ROOT,
    env: { ...process.env, APPRENTICE_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString('utf8')).slice(-8_000)));
  return { child, stderr: () => stderr, alive: () => child.exitCode === null && child.signalCode === null };
}

/** Waits until the process's API answers /healthz; fails at once, with its stderr, if it exits first. */
export async function waitForCloudApi(c: CloudChild, apiUrl: string, timeoutMs = 60_000): Promise<void> {
  await waitFor(
    async () => {
      if (!c.alive()) throw new Error(`cloud process exited ${c.child.exitCode ?? c.child.signalCode}: ${c.stderr()}`);
      return (await fetch(`${apiUrl}/healthz`).catch(() => undefined))?.ok;
    },
    timeoutMs,
    { intervalMs: 100, message: 'cloud process API' },
  );
}

/** Shared signing keys and a root-signed key set under `root/keys`, as every replica of a cluster reads them. */
export function sharedClusterKeys(root: string): string {
  const shared = join(root, 'keys');
  const admin = KeyStore.open({ dir: shared });
  const rootPub = initRoot(join(root, 'root.pem'));
  publishKeySet(shared, signKeySet(draftKeySet({ keys: admin.list(), root: rootPub, expiresDays: 30 }), [readFileSync(join(root, 'root.pem'), 'utf8')]), admin.active());
  return shared;
}

/**
 * Writes replica `id`'s cloud.json under `root/id`: cluster on, shared keys, one external broker with shared
 * subscriptions, the registry at `registryUrl`; `extra` adds to it. Returns the file and the replica's API URL.
 */
export async function writeReplicaConfig(
  root: string,
  id: string,
  o: { registryUrl: string; brokerUrl: string; sharedDir: string; adminToken: string; mqtt?: Record<string, unknown>; extra?: Record<string, unknown> },
): Promise<{ file: string; apiUrl: string }> {
  const port = await freePort();
  const dataDir = join(root, id);
  mkdirSync(dataDir, { recursive: true });
  const file = join(dataDir, 'cloud.json');
  writeFileSync(
    file,
    JSON.stringify({
      dataDir,
      api: { bind: `127.0.0.1:${port}`, adminToken: o.adminToken },
      registry: { url: o.registryUrl },
      mqtt: { url: o.brokerUrl, sharedSubscriptions: true, ...o.mqtt },
      keys: { sharedDir: o.sharedDir },
      cluster: { enabled: true, replicaId: id },
      rounds: { tickSeconds: 3600 },
      ...o.extra,
    }),
  );
  return { file, apiUrl: `http://127.0.0.1:${port}` };
}

/** Child processes of `pid` whose command line contains `match` (e.g. a cloud process's round worker). */
export function childPids(pid: number, match = ''): number[] {
  let out: string;
  try {
    out = execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(pid)], { encoding: 'utf8' });
  } catch {
    return []; // ps exits 1 when there are none
  }
  return out
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && line.includes(match))
    .map((line) => Number(line.split(/\s+/)[0]))
    .filter((n) => n > 0);
}

/** True while a process with this pid exists (a zombie counts until reaped). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
