import cliProgress from 'cli-progress';

export interface ProgressBar {
  update(value: number, payload?: Record<string, string | number>): void;
  stop(): void;
}

/**
 * A progress bar on stderr (stdout stays clean for `--json`). When stderr is not a TTY (CI, logs)
 * it prints one line per `lineEvery` updates instead of redrawing.
 *
 * @example
 * const bar = createProgressBar({ label: 'epoch 1/5', total: 469, format: 'loss {loss} | {sps} samples/s' });
 */
export function createProgressBar({ label, total, format = '', enabled = true, initial = {} }: { label: string; total: number; format?: string; enabled?: boolean; initial?: Record<string, string | number> }): ProgressBar {
  if (!enabled) return { update() {}, stop() {} };
  const bar = new cliProgress.SingleBar(
    {
      format: `${label} [{bar}] {percentage}% {value}/{total}${format ? ' | ' + format : ''}`,
      stream: process.stderr,
      hideCursor: true,
      noTTYOutput: true,
      notTTYSchedule: 10_000,
      etaBuffer: 50,
    },
    cliProgress.Presets.legacy,
  );
  bar.start(total, 0, initial);
  return {
    update: (v, payload) => bar.update(v, payload ?? {}),
    stop: () => bar.stop(),
  };
}
