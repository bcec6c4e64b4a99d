/**
 * Pure parts of the replicas bench (test/bench/replicas.bench.ts): latency statistics, a Prometheus counter
 * read from /metrics text, CPU per example, ratios against the one-replica baseline, what used the most CPU,
 * and the one-line summary. Tested in test/unit/bench/replicas-summary.test.ts.
 */
import { percentileOfSorted } from '../../shared/util/percentile.js';

/** The ranking's entry for the machine's busy time not accounted to the bench's own processes. */
export const REST_OF_MACHINE = 'rest of the machine';

export const round = (x: number, d = 2): number => (Number.isFinite(x) ? Math.round(x * 10 ** d) / 10 ** d : x);

export interface LatencyStats {
  n: number;
  p50: number;
  p99: number;
  max: number;
}

/** n, p50, p99 (nearest rank) and max of a list of ms; NaN figures for an empty list. */
export function latencyStats(ms: readonly number[]): LatencyStats {
  const s = [...ms].sort((a, b) => a - b);
  return { n: s.length, p50: round(percentileOfSorted(s, 50)), p99: round(percentileOfSorted(s, 99)), max: round(s.at(-1) ?? NaN) };
}

/**
 * The value of counter `name` with exactly `labels` in Prometheus text exposition (label order as printed
 * by prom-client does not matter); 0 when the series is absent (a counter not incremented yet).
 */
export function promCounter(text: string, name: string, labels: Record<string, string> = {}): number {
  const want = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .sort()
    .join(',');
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || !line.startsWith(name)) continue;
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = (m[2] ?? '')
      .split(',')
      .filter(Boolean)
      .sort()
      .join(',');
    if (got === want) return Number(m[3]);
  }
  return 0;
}

/** CPU ms per example: NaN when nothing was stored (a figure per 0 examples is not a figure). */
export const cpuMsPerExample = (cpuSeconds: number, examples: number): number => (examples > 0 ? round((cpuSeconds * 1000) / examples, 3) : NaN);

/** The processes' CPU seconds in a window, largest first, with each one's share of the window's CPU capacity. */
export function cpuRanking(cpuSeconds: Record<string, number>, windowSeconds: number, cores: number): { name: string; seconds: number; shareOfMachine: number }[] {
  return Object.entries(cpuSeconds)
    .map(([name, seconds]) => ({ name, seconds: round(seconds), shareOfMachine: round(seconds / (windowSeconds * cores), 3) }))
    .sort((a, b) => b.seconds - a.seconds);
}

/** Ratio of each numeric field of `run` to the same field of `base` (missing or zero base: NaN). */
export function ratios<K extends string>(run: Record<K, number>, base: Record<K, number>): Record<K, number> {
  const out = {} as Record<K, number>;
  for (const k of Object.keys(run) as K[]) out[k] = base[k] ? round(run[k] / base[k]) : NaN;
  return out;
}

/** The headline figures of one N, as the summary line and the ratios read them. */
export interface RunHeadline {
  replicas: number;
  storedPerSecond: number;
  ingestP99Ms: number;
  apiP99Ms: number;
  cloudCpuMsPerExample: number;
  lost: number;
  machineBusy: number;
  /** The bench's own process (cloud, postgres, mosquitto, load generator) that used the most CPU. */
  topCpu: string;
  /** Share of the machine's CPU capacity used by other processes in the window. */
  restOfMachineShare: number;
}

/** One line: per N, examples/s stored, ingest and API p99, cloud CPU ms per example, lost, machine busy (and by whom), our top CPU user. */
export function summaryLine(runs: readonly RunHeadline[], file: string): string {
  const parts = runs.map(
    (r) =>
      `N=${r.replicas}: ${round(r.storedPerSecond, 0)} ex/s, ingest p99 ${round(r.ingestP99Ms, 1)} ms, API p99 ${round(r.apiP99Ms, 1)} ms, cloud ${round(r.cloudCpuMsPerExample, 3)} CPU ms/ex, ${r.lost} lost, machine ${Math.round(r.machineBusy * 100)}% busy (${Math.round(r.restOfMachineShare * 100)}% by other processes; most CPU of ours: ${r.topCpu})`,
  );
  return `replicas: ${parts.join(' | ')} → ${file}`;
}
