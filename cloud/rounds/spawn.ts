import { fork, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';

/**
 * Worker entry and node flags. Built (dist/): plain `node worker.js`. From TypeScript source (vitest,
 * `node --import tsx`), this file's URL ends in .ts: fork worker.ts through the tsx loader, resolved
 * from this package so it does not depend on the working directory.
 */
export function defaultWorker(): { path: string; execArgv: string[] } {
  const fromSource = import.meta.url.endsWith('.ts');
  const path = fileURLToPath(new URL(fromSource ? './worker.ts' : './worker.js', import.meta.url));
  if (!fromSource) return { path, execArgv: [] };
  const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
  return { path, execArgv: ['--import', tsx] };
}

/**
 * Forks a round worker with an IPC channel. Explicit execArgv: the parent's own flags (a test
 * runner's, an inspector port) must not leak into the worker. stdout is drained and dropped; stderr
 * is piped so the caller can keep its tail for the failure reason.
 */
export function forkWorker({ path, execArgv }: { path?: string; execArgv?: string[] } = {}): ChildProcess {
  const d = defaultWorker();
  const child = fork(path ?? d.path, [], { execArgv: execArgv ?? d.execArgv, stdio: ['ignore', 'pipe', 'pipe', 'ipc'], serialization: 'json' });
  child.stdout?.resume();
  return child;
}
