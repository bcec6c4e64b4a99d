import { spawn as nodeSpawn } from 'node:child_process';
import { silentLogger, type Logger } from '../log/index.js';

/**
 * sd_notify(3) for the edge daemon: READY=1, WATCHDOG=1, STOPPING=1, STATUS=… — a no-op without
 * NOTIFY_SOCKET (not started by systemd: a terminal, a container, tests).
 *
 * How the datagram is sent, and why:
 * - NOTIFY_SOCKET is an AF_UNIX SOCK_DGRAM socket. Node has no unix datagram sockets (`dgram` is UDP
 *   only; `net` is stream only, and connecting a stream to a datagram socket fails with EPROTOTYPE).
 * - Every npm package that sends them is a native addon (`unix-dgram`, which Zigbee2MQTT's sd-notify.ts
 *   loads; `sd-notify`, `sd-daemon` bind libsystemd): a node-gyp build on every Pi install, which this
 *   project avoids.
 * - So the daemon runs `systemd-notify KEY=VALUE…`, which ships with systemd wherever NOTIFY_SOCKET can
 *   be set. systemd accepts a message only from a process allowed by NotifyAccess=: with `main`, a
 *   child's datagram is dropped ("reception only permitted for main PID"), and `--pid=$MAINPID` does not
 *   help an unprivileged service (the kernel refuses forged SCM_CREDENTIALS without CAP_SYS_ADMIN,
 *   which CapabilityBoundingSet= removes). The unit therefore sets NotifyAccess=all: any process of the
 *   service's cgroup may notify — here only the daemon and the helpers it spawns.
 * - The classic race (the helper exits before systemd looked up its cgroup, systemd#2737) is closed by
 *   systemd-notify itself since v246: it sends BARRIER=1 and waits until the manager processed the
 *   message (we do not pass --no-block). Debian 12 / Raspberry Pi OS ship v252.
 * Cost: one short-lived process per message (a watchdog ping every WatchdogSec/2 = 15 s).
 */

export interface SdNotifyOptions {
  env?: NodeJS.ProcessEnv;
  log?: Logger;
  /** The helper; `systemd-notify` from PATH by default. */
  command?: string;
  /** Our pid, compared with WATCHDOG_PID (sd_watchdog_enabled(3)). */
  pid?: number;
  /** A helper that has not finished after this long is killed (the manager may be hung). */
  timeoutMs?: number;
  spawn?: typeof nodeSpawn;
}

export interface SdNotifier {
  /** NOTIFY_SOCKET is set: messages are sent. */
  readonly enabled: boolean;
  /** Half of WATCHDOG_USEC when the manager expects pings from us, else undefined. */
  readonly watchdogIntervalMs: number | undefined;
  /** Sends `KEY=VALUE` lines; resolves true when delivered. Never throws. */
  notify(fields: Record<string, string>): Promise<boolean>;
  ready(status?: string): Promise<boolean>;
  stopping(status?: string): Promise<boolean>;
  status(text: string): Promise<boolean>;
  watchdog(): Promise<boolean>;
  /** Pings WATCHDOG=1 every `watchdogIntervalMs` (no-op when the watchdog is off). */
  startWatchdog(): void;
  stopWatchdog(): void;
}

/** sd_watchdog_enabled(3): the interval in µs, when it is meant for this process. */
export function watchdogUsec(env: NodeJS.ProcessEnv, pid: number): number | undefined {
  const usec = Number(env.WATCHDOG_USEC);
  if (!env.WATCHDOG_USEC || !Number.isSafeInteger(usec) || usec <= 0) return undefined;
  if (env.WATCHDOG_PID && Number(env.WATCHDOG_PID) !== pid) return undefined;
  return usec;
}

/**
 * @example
 * const sd = createSdNotify({ log });
 * await api.listen(); await sd.ready('serving release 7');
 * sd.startWatchdog();
 * process.once('SIGTERM', () => void sd.stopping());
 */
export function createSdNotify({ env = process.env, log = silentLogger, command = 'systemd-notify', pid = process.pid, timeoutMs = 10_000, spawn = nodeSpawn }: SdNotifyOptions = {}): SdNotifier {
  const socket = env.NOTIFY_SOCKET;
  const enabled = typeof socket === 'string' && socket.length > 0;
  const usec = enabled ? watchdogUsec(env, pid) : undefined;
  const watchdogIntervalMs = usec === undefined ? undefined : Math.max(1, Math.floor(usec / 2000));
  let chain: Promise<unknown> = Promise.resolve();
  let broken = false;
  let timer: NodeJS.Timeout | undefined;
  let pingPending = false;

  const send = (fields: Record<string, string>): Promise<boolean> =>
    new Promise((resolve) => {
      // One assignment per argument; a newline inside a value would start a new (bogus) assignment.
      const args = Object.entries(fields).map(([k, v]) => `${k}=${v.replace(/[\r\n]+/g, ' ')}`);
      let settled = false;
      let kill: NodeJS.Timeout | undefined;
      const done = (ok: boolean, err?: unknown): void => {
        if (settled) return;
        settled = true;
        clearTimeout(kill);
        if (!ok) log.warn({ err, fields: Object.keys(fields) }, 'sd-notify/failed');
        resolve(ok);
      };
      let child: ReturnType<typeof nodeSpawn>;
      try {
        child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...env, NOTIFY_SOCKET: socket } });
      } catch (err) {
        return done(false, err);
      }
      let stderr = '';
      child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString('utf8')).slice(-500)));
      kill = setTimeout(() => {
        child.kill('SIGKILL');
        done(false, new Error(`${command} did not finish within ${timeoutMs} ms`));
      }, timeoutMs);
      kill.unref();
      child.once('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') {
          // Without the helper nothing can be sent; say so once and stop trying.
          broken = true;
          log.error({ command }, 'sd-notify/helper-missing: systemd will not see READY or WATCHDOG');
        }
        done(false, err);
      });
      child.once('close', (code) => (code === 0 ? done(true) : done(false, new Error(`${command} exited with ${code}: ${stderr.trim()}`))));
    });

  const notify = (fields: Record<string, string>): Promise<boolean> => {
    if (!enabled || broken) return Promise.resolve(false);
    // Serialised: READY must not overtake STATUS, and STOPPING must come after both.
    const run = chain.then(() => (broken ? false : send(fields)));
    chain = run.catch(() => undefined);
    return run;
  };

  return {
    enabled,
    watchdogIntervalMs,
    notify,
    ready: (status) => notify(status === undefined ? { READY: '1' } : { READY: '1', STATUS: status }),
    stopping: (status) => notify(status === undefined ? { STOPPING: '1' } : { STOPPING: '1', STATUS: status }),
    status: (text) => notify({ STATUS: text }),
    watchdog: () => notify({ WATCHDOG: '1' }),
    startWatchdog() {
      if (watchdogIntervalMs === undefined || timer) return;
      timer = setInterval(() => {
        // A slow helper must not pile up pings behind it.
        if (pingPending) return;
        pingPending = true;
        void notify({ WATCHDOG: '1' }).finally(() => (pingPending = false));
      }, watchdogIntervalMs);
      timer.unref();
    },
    stopWatchdog() {
      clearInterval(timer);
      timer = undefined;
    },
  };
}
