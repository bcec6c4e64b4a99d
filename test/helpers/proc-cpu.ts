/**
 * CPU time of processes and of the machine from Linux /proc, for benches that run several processes at once
 * (test/bench/replicas.bench.ts). Parsing is split from reading so it can be tested on fixed text.
 */
import { readdirSync, readFileSync } from 'node:fs';

/** Clock ticks per second of /proc times (USER_HZ): 100 on every Linux this runs on. */
export const USER_HZ = 100;

export interface ProcStat {
  pid: number;
  /** The executable name (field 2, without the parentheses; may contain spaces and parentheses itself). */
  comm: string;
  ppid: number;
  /** utime + stime, in clock ticks. */
  cpuTicks: number;
}

/**
 * Parses one /proc/<pid>/stat line. The comm field is in parentheses and may itself contain ") ", so the
 * fields after it are read from the last ")". Fields (1-based, proc(5)): 4 ppid, 14 utime, 15 stime.
 */
export function parseProcStat(line: string): ProcStat {
  const open = line.indexOf('(');
  const close = line.lastIndexOf(')');
  if (open < 0 || close < open) throw new Error(`not a /proc/<pid>/stat line: ${line.slice(0, 80)}`);
  const pid = Number(line.slice(0, open).trim());
  const rest = line.slice(close + 2).trim().split(/\s+/);
  // rest[0] is field 3 (state): field k is rest[k - 3].
  const num = (k: number) => {
    const v = Number(rest[k - 3]);
    if (!Number.isFinite(v)) throw new Error(`/proc/<pid>/stat field ${k} is not a number: ${line.slice(0, 80)}`);
    return v;
  };
  return { pid, comm: line.slice(open + 1, close), ppid: num(4), cpuTicks: num(14) + num(15) };
}

/** The stat of every readable process (processes that exit while being read are left out). */
export function readAllProcStats(): ProcStat[] {
  const out: ProcStat[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      out.push(parseProcStat(readFileSync(`/proc/${name}/stat`, 'utf8')));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** pid → CPU ticks of `roots` and all their descendants, from one snapshot of every process. */
export function treeTicks(all: readonly ProcStat[], roots: readonly number[]): Map<number, number> {
  const children = new Map<number, number[]>();
  for (const p of all) children.set(p.ppid, [...(children.get(p.ppid) ?? []), p.pid]);
  const byPid = new Map(all.map((p) => [p.pid, p]));
  const out = new Map<number, number>();
  const stack = [...roots];
  while (stack.length > 0) {
    const pid = stack.pop()!;
    const p = byPid.get(pid);
    if (!p || out.has(pid)) continue;
    out.set(pid, p.cpuTicks);
    stack.push(...(children.get(pid) ?? []));
  }
  return out;
}

/**
 * CPU seconds spent between two snapshots (pid → ticks): a pid in both counts its difference, a pid only in
 * `after` (started in between) all of its ticks; a pid only in `before` (exited) is lost and not counted.
 */
export function cpuSecondsBetween(before: ReadonlyMap<number, number>, after: ReadonlyMap<number, number>): number {
  let ticks = 0;
  for (const [pid, t] of after) ticks += t - (before.get(pid) ?? 0);
  return ticks / USER_HZ;
}

export interface MachineCpu {
  /** Ticks all CPUs spent busy (everything but idle and iowait). */
  busy: number;
  /** Ticks in all. */
  total: number;
}

/** Parses the aggregate `cpu` line of /proc/stat (user nice system idle iowait irq softirq steal ...). */
export function parseMachineCpu(procStat: string): MachineCpu {
  const line = procStat.split('\n').find((l) => l.startsWith('cpu '));
  if (!line) throw new Error('no aggregate "cpu " line in /proc/stat');
  const v = line.trim().split(/\s+/).slice(1, 9).map(Number);
  if (v.length < 5 || v.some((x) => !Number.isFinite(x))) throw new Error(`bad /proc/stat cpu line: ${line}`);
  const total = v.reduce((a, b) => a + b, 0);
  return { busy: total - v[3]! - v[4]!, total };
}

export function readMachineCpu(): MachineCpu {
  return parseMachineCpu(readFileSync('/proc/stat', 'utf8'));
}

/** Fraction (0..1) of all CPUs' time that was busy between two readings. */
export function busyFraction(a: MachineCpu, b: MachineCpu): number {
  const total = b.total - a.total;
  return total > 0 ? (b.busy - a.busy) / total : NaN;
}
