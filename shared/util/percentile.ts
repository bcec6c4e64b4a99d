/**
 * Nearest-rank percentile (`p` in 0..100) of values sorted ascending: the smallest value with at least
 * p% of the values at or below it. NaN for an empty list (a caller printing it shows "no samples"
 * rather than a made-up 0).
 *
 * @example
 * const sorted = latencies.slice().sort((a, b) => a - b);
 * const p95 = percentileOfSorted(sorted, 95);
 */
export function percentileOfSorted(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** `percentileOfSorted` of an unsorted list (sorts a copy). */
export function percentile(values: readonly number[], p: number): number {
  return percentileOfSorted([...values].sort((a, b) => a - b), p);
}
