/**
 * A round's worker process as the round runner (runner.ts) supervises it: the fork, the job it is sent,
 * its IPC messages (progress, outcome, sequence and signing requests), the tail of its stderr and its
 * wall-clock limit. The runner keeps the round rows; this module only talks to the child.
 */
import type { ChildProcess } from 'node:child_process';
import type { Logger } from '../../shared/log/index.js';
import type { StoreRegistry } from '../registry/open.js';
import type { RoundFencing } from './fencing.js';
import type { RoundSigningGuard } from './sign-guard.js';
import { forkWorker } from './spawn.js';
import type { RegistryLocation, RoundJob, RoundOutcome, RoundProgress, WorkerMessage } from './types.js';

/** A round this process runs (a worker), or finishes publishing after a recovery (no worker). */
export interface ActiveRound {
  id: string;
  model: string;
  child?: ChildProcess;
  progress: RoundProgress;
  lastWrite: number;
  outcome?: RoundOutcome;
  error?: string;
  stderr: string;
  done: Promise<void>;
  /** Set when the wall-clock limit killed the worker. */
  timedOut?: boolean;
  /** The round's one sequence and one signature (issue 10 item 9). */
  guard: RoundSigningGuard;
  /** The epoch (and fence) the round was launched under: its row writes and signature are fenced on it. */
  fencing: RoundFencing;
}

export const nowIso = (): string => new Date().toISOString();
const STDERR_TAIL = 2000;

/** Where the worker opens the registry this process uses: the same PostgreSQL URL or SQLite file (issue 15). */
export function registryLocation(reg: StoreRegistry): RegistryLocation {
  if (reg.dialect === 'postgres') return { url: reg.url };
  // The worker opens the file itself; an in-memory database cannot be shared with it.
  if (reg.sqlite.memory) throw new Error('RoundRunner needs a file-backed registry (the round worker opens the same SQLite file)');
  return { path: reg.sqlite.name };
}

export interface SuperviseOptions {
  workerPath?: string | undefined;
  workerExecArgv?: string[] | undefined;
  maxWallSeconds: number;
  log: Logger;
  /** A progress report of the worker. */
  onProgress(progress: RoundProgress): void;
  /** Called once, when the worker exited (or could not be spawned: `spawnError`). */
  onExit(code: number | null, signal: NodeJS.Signals | null, spawnError?: Error): void;
}

/** Forks the worker for round `a`, sends it `job` and supervises it until it exits (`o.onExit`). */
export function superviseWorker(a: ActiveRound, job: RoundJob, o: SuperviseOptions): ChildProcess {
  const child = forkWorker({ path: o.workerPath, execArgv: o.workerExecArgv });
  a.child = child;
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    a.stderr = (a.stderr + chunk).slice(-STDERR_TAIL);
  });
  child.on('message', (msg: WorkerMessage) => onWorkerMessage(a, msg, o));
  // A hung worker (a stuck teacher, a training loop that never converges) must not hold the model's
  // round slot for ever (issue 9): SIGTERM at the limit, SIGKILL if it does not leave.
  let killTimer: NodeJS.Timeout | undefined;
  const wallTimer = setTimeout(() => {
    a.timedOut = true;
    o.log.warn({ round: a.id, maxWallSeconds: o.maxWallSeconds }, 'round over its wall-clock limit; stopping its worker');
    child.kill('SIGTERM');
    killTimer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  }, o.maxWallSeconds * 1000);
  let exited = false;
  const onExit = (code: number | null, signal: NodeJS.Signals | null, spawnError?: Error) => {
    if (exited) return;
    exited = true;
    clearTimeout(wallTimer);
    clearTimeout(killTimer);
    o.onExit(code, signal, spawnError);
  };
  child.on('exit', (code, signal) => onExit(code, signal));
  // 'error' also fires when a send to a dying worker fails; only a failed spawn (no pid) ends the round here, else 'exit' follows.
  child.on('error', (err) => (child.pid === undefined ? onExit(null, null, err) : o.log.warn({ err, round: a.id }, 'rounds/worker channel error')));
  child.send({ type: 'job', job });
  o.log.info({ round: a.id, model: a.model, pid: child.pid }, 'round worker started');
  return child;
}

/** One IPC message of the worker: progress and outcome are kept on `a`; sequence and signing requests are answered. */
function onWorkerMessage(a: ActiveRound, msg: WorkerMessage, o: Pick<SuperviseOptions, 'log' | 'onProgress'>): void {
  try {
    if (msg.type === 'progress') o.onProgress(msg.progress);
    else if (msg.type === 'done') a.outcome = msg.outcome;
    else if (msg.type === 'error') a.error = msg.message;
    else if (msg.type === 'sequence') {
      a.guard.sequence(typeof msg.cohort === 'string' ? msg.cohort : null).then(
        (seq) => {
          o.log.info({ round: a.id, release: seq }, 'round allocated its release sequence');
          a.child?.send({ type: 'sequence', requestId: msg.requestId, seq });
        },
        (err: Error) => {
          o.log.warn({ err, round: a.id }, 'round release sequence not allocated');
          a.child?.send({ type: 'sign-failed', requestId: msg.requestId, message: `no release sequence: ${err?.message ?? String(err)}` });
        },
      );
    } else if (msg.type === 'sign') {
      Promise.resolve()
        .then(() => a.guard.sign(msg.manifest))
        .then(
          (signed) => {
            o.log.info({ round: a.id, release: signed.manifest.release, sha256: signed.manifest.artifact.sha256 }, 'round manifest signed');
            a.child?.send({ type: 'signed', requestId: msg.requestId, signed });
          },
          (err: Error) => {
            o.log.warn({ round: a.id, reason: err?.message }, 'round signing request refused');
            a.child?.send({ type: 'sign-failed', requestId: msg.requestId, message: err?.message ?? String(err) });
          },
        );
    }
  } catch (err) {
    // One bad message never takes the cloud down (STYLE.md §5).
    o.log.error({ err, round: a.id }, 'rounds/message failed');
  }
}

/** Why a worker that reported no outcome ended: its own error, the wall-clock limit, a failed spawn, a signal or an exit code, with its stderr's tail. */
export function failureReason(a: ActiveRound, code: number | null, signal: NodeJS.Signals | null, spawnError: Error | undefined, maxWallSeconds: number): string {
  const tail = a.stderr.trim().split('\n').slice(-5).join('\n');
  const how = a.timedOut
    ? `round exceeded its wall-clock limit of ${maxWallSeconds} s (rounds.maxWallSeconds); worker stopped`
    : spawnError
      ? `worker could not start: ${spawnError.message}`
      : signal
        ? `worker killed by ${signal}`
        : `worker exited with code ${code}`;
  return [a.error ?? how, a.error ? `(${how})` : '', tail && !a.error ? `stderr: ${tail}` : ''].filter(Boolean).join(' ');
}
