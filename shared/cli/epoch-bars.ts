import { createProgressBar, type ProgressBar } from './progress.js';

/** Progress of one training epoch, as the trainers report it. */
export interface EpochProgress {
  epoch: number;
  epochs: number;
  batch: number;
  batches: number;
  loss: number;
  samplesPerSec: number;
  epochDone: boolean;
}

/**
 * One progress bar per epoch (loss, samples/s) on stderr, plus phase lines.
 * Disabled (silent) for `--json` so scripts get only the report on stdout.
 */
export function epochBars(enabled: boolean): { phase(name: string, detail?: string): void; epoch(run: string, p: EpochProgress): void; stop(): void } {
  let bar: ProgressBar | undefined;
  let key = '';
  return {
    phase(name, detail) {
      if (!enabled) return;
      bar?.stop();
      bar = undefined;
      process.stderr.write(`» ${name}${detail ? `: ${detail}` : ''}\n`);
    },
    epoch(run, p) {
      if (!enabled) return;
      const k = `${run}:${p.epoch}`;
      if (k !== key) {
        bar?.stop();
        key = k;
        bar = createProgressBar({ label: `${run} epoch ${String(p.epoch).padStart(String(p.epochs).length)}/${p.epochs}`, total: p.batches, format: 'loss {loss} | {sps} samples/s', initial: { loss: '-', sps: '-' } });
      }
      bar!.update(p.batch, { loss: p.loss.toFixed(4), sps: Math.round(p.samplesPerSec) });
      if (p.epochDone) {
        bar!.stop();
        bar = undefined;
      }
    },
    stop() {
      bar?.stop();
    },
  };
}
