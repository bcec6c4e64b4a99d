import { describe, expect, it } from 'vitest';
import { busyFraction, cpuSecondsBetween, parseMachineCpu, parseProcStat, readAllProcStats, treeTicks, type ProcStat } from '../../helpers/proc-cpu.js';
import { REST_OF_MACHINE, cpuMsPerExample, cpuRanking, latencyStats, promCounter, ratios, summaryLine, type RunHeadline } from '../../bench/replicas-summary.js';

/** A /proc/<pid>/stat line with the given comm, ppid, utime and stime (other fields as a real line has them). */
const statLine = (pid: number, comm: string, ppid: number, utime: number, stime: number) =>
  `${pid} (${comm}) S ${ppid} ${pid} ${pid} 0 -1 4194560 1000 0 0 0 ${utime} ${stime} 0 0 20 0 11 0 1234 1000000 5000 18446744073709551615`;

describe('parseProcStat', () => {
  it('reads pid, comm, ppid and utime + stime', () => {
    expect(parseProcStat(statLine(4242, 'node', 17, 250, 31))).toEqual({ pid: 4242, comm: 'node', ppid: 17, cpuTicks: 281 });
  });

  it('reads a comm holding spaces and ") " from the last parenthesis', () => {
    const p = parseProcStat(statLine(7, 'a) S 1 (b', 3, 10, 5));
    expect(p).toEqual({ pid: 7, comm: 'a) S 1 (b', ppid: 3, cpuTicks: 15 });
  });

  it('refuses a line that is not a stat line', () => {
    expect(() => parseProcStat('no parentheses here')).toThrow(/not a \/proc/);
    expect(() => parseProcStat('1 (x) S')).toThrow(/field 4/);
  });

  it('finds this process in /proc with its parent', () => {
    const me = readAllProcStats().find((p) => p.pid === process.pid);
    expect(me?.ppid).toBe(process.ppid);
    expect(me!.cpuTicks).toBeGreaterThanOrEqual(0);
  });
});

describe('process tree CPU', () => {
  const procs = (ticks: Record<number, number>): ProcStat[] =>
    [
      { pid: 10, ppid: 1 },
      { pid: 11, ppid: 10 },
      { pid: 12, ppid: 11 },
      { pid: 20, ppid: 1 },
    ]
      .filter((p) => ticks[p.pid] !== undefined)
      .map((p) => ({ ...p, comm: 'x', cpuTicks: ticks[p.pid]! }));

  it('sums a root and its descendants, not its siblings', () => {
    expect([...treeTicks(procs({ 10: 5, 11: 7, 12: 1, 20: 100 }), [10]).entries()].sort()).toEqual([
      [10, 5],
      [11, 7],
      [12, 1],
    ]);
  });

  it('counts differences, and all of a process started in between; an exited one is not counted', () => {
    const before = treeTicks(procs({ 10: 100, 11: 50, 20: 0 }), [10]);
    const after = treeTicks(procs({ 10: 150, 12: 30, 20: 999 }), [10]);
    // 11 exited, so 12 (its child) is no longer under 10 either: only 10's +50.
    expect(cpuSecondsBetween(before, after)).toBeCloseTo(0.5);
    const after2 = treeTicks(procs({ 10: 150, 11: 60, 12: 30 }), [10]);
    expect(cpuSecondsBetween(before, after2)).toBeCloseTo((50 + 10 + 30) / 100);
  });
});

describe('machine CPU', () => {
  const stat = (user: number, idle: number, iowait: number) => `cpu  ${user} 0 100 ${idle} ${iowait} 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 1`;
  it('busy is all but idle and iowait; the fraction is of the ticks between two readings', () => {
    const a = parseMachineCpu(stat(1000, 5000, 100));
    expect(a).toEqual({ busy: 1100, total: 6200 });
    const b = parseMachineCpu(stat(1300, 5100, 100));
    expect(busyFraction(a, b)).toBeCloseTo(300 / 400);
    expect(busyFraction(a, a)).toBeNaN();
  });
  it('refuses a /proc/stat without the aggregate line', () => {
    expect(() => parseMachineCpu('cpu0 1 2 3 4 5')).toThrow(/aggregate/);
  });
});

describe('replicas bench figures', () => {
  it('latency stats: nearest-rank p50 and p99, max, count; NaN with no samples', () => {
    const xs = Array.from({ length: 200 }, (_, i) => 200 - i); // 1..200, unsorted
    expect(latencyStats(xs)).toEqual({ n: 200, p50: 100, p99: 198, max: 200 });
    expect(latencyStats([]).p99).toBeNaN();
  });

  it('reads a labelled counter from Prometheus text, 0 when absent', () => {
    const text = [
      '# HELP apprentice_cloud_ingest_examples_total Hard examples by result',
      '# TYPE apprentice_cloud_ingest_examples_total counter',
      'apprentice_cloud_ingest_examples_total{result="duplicate"} 3',
      'apprentice_cloud_ingest_examples_total{result="inserted"} 1234',
      'apprentice_cloud_ingest_examples_total_extra{result="inserted"} 9',
      'process_cpu_seconds_total 5.5',
    ].join('\n');
    expect(promCounter(text, 'apprentice_cloud_ingest_examples_total', { result: 'inserted' })).toBe(1234);
    expect(promCounter(text, 'apprentice_cloud_ingest_examples_total', { result: 'failed' })).toBe(0);
    expect(promCounter(text, 'process_cpu_seconds_total')).toBe(5.5);
    expect(promCounter('m{b="2",a="1"} 7', 'm', { a: '1', b: '2' })).toBe(7);
  });

  it('CPU ms per example, none for zero examples; ranking largest first with the share of the machine', () => {
    expect(cpuMsPerExample(2, 4000)).toBe(0.5);
    expect(cpuMsPerExample(2, 0)).toBeNaN();
    expect(cpuRanking({ a: 1, b: 4, c: 2 }, 10, 2)).toEqual([
      { name: 'b', seconds: 4, shareOfMachine: 0.2 },
      { name: 'c', seconds: 2, shareOfMachine: 0.1 },
      { name: 'a', seconds: 1, shareOfMachine: 0.05 },
    ]);
  });

  it('ratios to the baseline, NaN where the baseline is 0', () => {
    expect(ratios({ x: 30, y: 5 }, { x: 10, y: 0 })).toEqual({ x: 3, y: NaN });
  });

  it('the summary line names every N with its figures and the file', () => {
    const h = (replicas: number, storedPerSecond: number): RunHeadline => ({ replicas, storedPerSecond, ingestP99Ms: 12.34, apiP99Ms: 5.67, cloudCpuMsPerExample: 0.4567, lost: 0, machineBusy: 0.83, topCpu: 'cloud r1', restOfMachineShare: 0.4 });
    const line = summaryLine([h(1, 799.6), h(2, 801.2)], '/x/replicas.json');
    expect(line).toBe(
      'replicas: N=1: 800 ex/s, ingest p99 12.3 ms, API p99 5.7 ms, cloud 0.457 CPU ms/ex, 0 lost, machine 83% busy (40% by other processes; most CPU of ours: cloud r1)' +
        ' | N=2: 801 ex/s, ingest p99 12.3 ms, API p99 5.7 ms, cloud 0.457 CPU ms/ex, 0 lost, machine 83% busy (40% by other processes; most CPU of ours: cloud r1) → /x/replicas.json',
    );
    expect(REST_OF_MACHINE).toBe('rest of the machine');
  });
});
