import { spawn, type ChildProcess } from 'node:child_process';
import { waitFor } from './broker.js';
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
