import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

/**
 * A fake systemd for one service (issue 14 tests): runs ExecStartPre= then ExecStart= from the real
 * unit file (paths mapped into a --prefix root), and restarts per Restart=on-failure and
 * RestartForceExitStatus=, counting starts against StartLimitBurst= within StartLimitIntervalSec= the
 * way systemd does (a start past the burst puts the unit in `failed`). RestartSec= is shortened.
 */
export interface UnitRestartPolicy {
  execStartPre: string[];
  execStart: string;
  restart: string;
  restartForceExitStatus: number[];
  startLimitBurst: number;
  startLimitIntervalSec: number;
}

export function readUnitPolicy(file: string): UnitRestartPolicy {
  const values = new Map<string, string[]>();
  for (const raw of readFileSync(file, 'utf8').split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith('[')) continue;
    const eq = line.indexOf('=');
    const k = line.slice(0, eq);
    values.set(k, [...(values.get(k) ?? []), line.slice(eq + 1)]);
  }
  const one = (k: string): string => {
    const v = values.get(k)?.at(-1);
    if (v === undefined) throw new Error(`${file}: no ${k}=`);
    return v;
  };
  return {
    execStartPre: values.get('ExecStartPre') ?? [],
    execStart: one('ExecStart'),
    restart: one('Restart'),
    restartForceExitStatus: (values.get('RestartForceExitStatus') ?? []).flatMap((v) => v.split(/\s+/)).map(Number),
    startLimitBurst: Number(one('StartLimitBurst')),
    startLimitIntervalSec: Number(one('StartLimitIntervalSec')),
  };
}

export interface ServiceRun {
  result: 'exited' | 'start-limit-hit' | 'stopped';
  starts: number;
  /** Exit code (or signal name) of each ExecStart run. */
  exits: Array<number | string>;
  output: string;
}

export interface RunServiceOptions {
  policy: UnitRestartPolicy;
  /** Rewrites a command line of the unit for the test root (paths, node). */
  map: (cmd: string) => string;
  env: NodeJS.ProcessEnv;
  cwd: string;
  restartSecMs?: number;
  /** Gives up (result `stopped`) after this many starts, a guard against a test looping forever. */
  maxStarts?: number;
  timeoutMs?: number;
}

function runCommand(cmd: string, env: NodeJS.ProcessEnv, cwd: string, out: string[], timeoutMs: number): Promise<number | string> {
  // Unit command lines here have no quoting: split on whitespace, as systemd does for them.
  const [file, ...args] = cmd.split(/\s+/).filter(Boolean);
  return new Promise((resolve) => {
    const child = spawn(file!, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (d: Buffer) => out.push(d.toString()));
    child.stderr.on('data', (d: Buffer) => out.push(d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve(signal ?? code ?? -1);
    });
  });
}

export async function runService(o: RunServiceOptions): Promise<ServiceRun> {
  const { policy } = o;
  const startTimes: number[] = [];
  const exits: Array<number | string> = [];
  const out: string[] = [];
  const timeout = o.timeoutMs ?? 30_000;
  for (;;) {
    const now = Date.now();
    startTimes.push(now);
    const recent = startTimes.filter((t) => now - t < policy.startLimitIntervalSec * 1000);
    if (recent.length > policy.startLimitBurst) return { result: 'start-limit-hit', starts: startTimes.length - 1, exits, output: out.join('') };
    if (o.maxStarts !== undefined && startTimes.length > o.maxStarts) return { result: 'stopped', starts: startTimes.length - 1, exits, output: out.join('') };
    let failed: number | string | undefined;
    for (const pre of policy.execStartPre) {
      const code = await runCommand(o.map(pre), o.env, o.cwd, out, timeout);
      if (code !== 0) {
        failed = code;
        break;
      }
    }
    const code = failed ?? (await runCommand(o.map(policy.execStart), o.env, o.cwd, out, timeout));
    exits.push(code);
    const forced = typeof code === 'number' && policy.restartForceExitStatus.includes(code);
    const onFailure = policy.restart === 'on-failure' && code !== 0;
    if (!forced && !onFailure) return { result: 'exited', starts: startTimes.length, exits, output: out.join('') };
    await new Promise((r) => setTimeout(r, o.restartSecMs ?? 20));
  }
}
