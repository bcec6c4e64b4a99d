/**
 * A private Mosquitto child process per test (never the system broker on :1883).
 * Use through `test/helpers/broker.ts`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsc, mkdtempSync, statSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestBroker } from './broker.js';
import { canConnect, freePort, sleep } from './net.js';

/** CI sets this so a missing Mosquitto fails the run instead of silently shrinking coverage. */
export const REQUIRE_MOSQUITTO_ENV = 'APPRENTICE_REQUIRE_MOSQUITTO';

export class MosquittoMissingError extends Error {
  override readonly name = 'MosquittoMissingError';
}

export class MosquittoStartError extends Error {
  override readonly name = 'MosquittoStartError';
}

let cached: { key: string; path: string | undefined } | undefined;

const SBIN_DIRS = ['/usr/sbin', '/usr/local/sbin', '/sbin'];

/** First executable file named `name` in PATH or the sbin dirs (Debian's mosquitto lives in /usr/sbin). */
export function findExecutable(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter), ...SBIN_DIRS].filter(Boolean);
  return dirs.map((d) => path.join(d, name)).find(isExecutableFile);
}

function isExecutableFile(p: string): boolean {
  try {
    accessSync(p, fsc.X_OK);
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/**
 * Absolute path of the `mosquitto` binary, or undefined. Honours `APPRENTICE_MOSQUITTO_BIN`, then PATH,
 * then the sbin directories Debian installs it to (often missing from a non-root PATH).
 * Cached per value of those two variables.
 */
export function mosquittoPath(): string | undefined {
  const explicit = process.env.APPRENTICE_MOSQUITTO_BIN;
  const key = `${explicit ?? ''}\0${process.env.PATH ?? ''}`;
  if (cached?.key === key) return cached.path;
  const found = explicit ? (isExecutableFile(explicit) ? explicit : undefined) : findExecutable('mosquitto');
  cached = { key, path: found };
  return found;
}

export function mosquittoAvailable(): boolean {
  return mosquittoPath() !== undefined;
}

export function mosquittoRequired(): boolean {
  const v = process.env[REQUIRE_MOSQUITTO_ENV];
  return v === '1' || v === 'true';
}

export function missingMosquittoReason(): string {
  return 'mosquitto binary not found (PATH, /usr/sbin, APPRENTICE_MOSQUITTO_BIN); install the `mosquitto` package';
}

export interface StartMosquittoOptions {
  /** Port of the plain listener on 127.0.0.1; a free one by default (and retried if it was taken). */
  port?: number;
  /** Working dir for mosquitto.conf, persistence and anything the test puts there; a fresh temp dir (removed on stop) by default. */
  dir?: string;
  /** `persistence true` in `dir/data/`: retained messages and sessions survive a SIGTERM restart. Default false. */
  persistence?: boolean;
  /** Extra lines appended to the generated config. */
  config?: string | readonly string[];
  /**
   * Replaces the generated config entirely. It must open a listener on `127.0.0.1:${port}` (readiness is
   * probed there). When run as root, `user root` is appended unless the config has a `user` line, so
   * mosquitto does not drop to the `mosquitto` user and lose access to the temp dir.
   */
  fullConfig?: (ctx: { port: number; dir: string }) => string;
  /** How long to wait for the listener; default 10 s. */
  startTimeoutMs?: number;
}

export interface MosquittoBroker extends TestBroker {
  readonly kind: 'mosquitto';
  readonly dir: string;
  readonly configPath: string;
  /** PID of the running child, undefined while killed. */
  readonly pid: number | undefined;
  /**
   * Sends `signal` (default SIGKILL) and, for signals that end mosquitto, waits for the exit.
   * SIGHUP (reload), SIGSTOP, SIGCONT and SIGUSR1/2 resolve right after sending.
   */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /**
   * Kills (default SIGTERM, which lets persistence be written; SIGKILL simulates a crash) and respawns with
   * the same config on the same port, then waits until it accepts connections. Also starts a killed broker.
   */
  restart(opts?: { signal?: NodeJS.Signals }): Promise<void>;
  /** The last lines mosquitto printed, for assertion messages. */
  logs(): string;
}

const NON_FATAL = new Set<NodeJS.Signals>(['SIGHUP', 'SIGSTOP', 'SIGCONT', 'SIGUSR1', 'SIGUSR2']);
const live = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Children must not outlive a crashed test worker (they would hold ports and temp dirs). */
function trackChild(child: ChildProcess): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const c of live) c.kill('SIGKILL');
    });
  }
}

function generatedConfig(port: number, dir: string, persistence: boolean, extra: readonly string[]): string {
  return [
    '# generated by test/helpers/mosquitto.ts',
    'per_listener_settings false',
    'allow_anonymous true',
    `persistence ${persistence}`,
    ...(persistence ? [`persistence_location ${path.join(dir, 'data')}${path.sep}`, 'autosave_interval 1'] : []),
    `listener ${port} 127.0.0.1`,
    'log_dest stderr',
    // one type per line: mosquitto only reads the first word of a log_type line
    'log_type error',
    'log_type warning',
    'log_type notice',
    'log_type information',
    ...extra,
    '',
  ].join('\n');
}

function exitOf(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/**
 * Spawns `mosquitto -c <dir>/mosquitto.conf` listening on 127.0.0.1 and waits until it accepts TCP
 * connections. Throws MosquittoMissingError when the binary is absent (see `brokerMatrix()` /
 * `requireMosquittoOrSkip()` to skip instead).
 *
 * @example
 * const m = await startMosquitto({ persistence: true });
 * await m.restart();                    // same port, retained messages kept
 * await m.kill('SIGKILL'); await m.restart(); // crash + come back
 * await m.stop();
 */
export async function startMosquitto(opts: StartMosquittoOptions = {}): Promise<MosquittoBroker> {
  const bin = mosquittoPath();
  if (!bin) throw new MosquittoMissingError(missingMosquittoReason());
  const { persistence = false, fullConfig, startTimeoutMs = 10_000 } = opts;
  const extra = opts.config === undefined ? [] : typeof opts.config === 'string' ? [opts.config] : [...opts.config];
  const ownDir = opts.dir === undefined;
  const dir = opts.dir ?? mkdtempSync(path.join(tmpdir(), 'apprentice-mosquitto-'));
  await mkdir(dir, { recursive: true });
  if (persistence) await mkdir(path.join(dir, 'data'), { recursive: true });
  const configPath = path.join(dir, 'mosquitto.conf');

  let port = opts.port ?? (await freePort());
  let child: ChildProcess | undefined;
  let output: string[] = [];
  let stopped = false;

  const writeConfig = async (): Promise<void> => {
    let text = fullConfig ? fullConfig({ port, dir }) : generatedConfig(port, dir, persistence, extra);
    if (process.getuid?.() === 0 && !/^\s*user\s/m.test(text)) text += '\n# tests run as root: keep access to the temp dir\nuser root\n';
    await writeFile(configPath, text);
  };

  const spawnOnce = async (): Promise<void> => {
    output = [];
    const c = spawn(bin, ['-c', configPath], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    trackChild(c);
    const collect = (chunk: Buffer) => {
      output.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      if (output.length > 200) output = output.slice(-200);
    };
    c.stdout?.on('data', collect);
    c.stderr?.on('data', collect);
    let exited = false;
    c.once('exit', () => (exited = true));
    const deadline = Date.now() + startTimeoutMs;
    while (Date.now() < deadline) {
      if (exited) break;
      if (await canConnect(port)) {
        if (!exited) return;
        break;
      }
      await sleep(25);
    }
    if (!exited) {
      c.kill('SIGKILL');
      await exitOf(c);
    }
    child = undefined;
    const why = exited ? `exited with ${c.exitCode ?? c.signalCode}` : `did not listen within ${startTimeoutMs} ms`;
    throw new MosquittoStartError(`mosquitto on port ${port} ${why}:\n${output.join('\n')}`);
  };

  const kill = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    const c = child;
    if (!c) return;
    c.kill(signal);
    if (NON_FATAL.has(signal)) return;
    // A SIGSTOPped broker only acts on SIGTERM once continued.
    if (signal !== 'SIGKILL') c.kill('SIGCONT');
    await exitOf(c);
    if (child === c) child = undefined;
  };

  // Start, retrying on a port lost to a race between freePort() and mosquitto's bind.
  for (let attempt = 1; ; attempt++) {
    await writeConfig();
    try {
      await spawnOnce();
      break;
    } catch (err) {
      const inUse = output.some((l) => /address already in use/i.test(l));
      if (!(inUse && opts.port === undefined && attempt < 3)) {
        if (ownDir) await rm(dir, { recursive: true, force: true });
        throw err;
      }
      port = await freePort();
    }
  }

  return {
    kind: 'mosquitto',
    get url() {
      return `mqtt://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    dir,
    configPath,
    get pid() {
      return child?.pid;
    },
    kill,
    async restart({ signal = 'SIGTERM' } = {}) {
      if (stopped) throw new Error('startMosquitto: restart() after stop()');
      await kill(signal);
      await spawnOnce();
    },
    logs: () => output.join('\n'),
    async stop() {
      if (stopped) return;
      stopped = true;
      const c = child;
      if (c) {
        const timer = setTimeout(() => c.kill('SIGKILL'), 5_000);
        await kill('SIGTERM');
        clearTimeout(timer);
      }
      if (ownDir) await rm(dir, { recursive: true, force: true });
    },
  };
}
