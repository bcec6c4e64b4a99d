import { UsageError } from '../../shared/cli/errors.js';

/**
 * Architecture grammar for teachers and students (documented in the README):
 *
 *   spec    := "mlp:" widths | "linear"
 *   widths  := width ("," width)*         e.g. mlp:800,800   mlp:64
 *   width   := integer 1..16384
 *
 * `mlp:H1,...,Hk` is input → Dense(H1, relu) → … → Dense(Hk, relu) → Dense(classes) producing logits.
 * `linear` is multinomial logistic regression (no hidden layer). Dropout is a training option, not
 * part of the architecture, because the exported model never contains it.
 *
 * CNN students are not offered: the tfjs wasm backend (our training backend without libtensorflow)
 * has no Conv2DBackpropFilter kernel, so they could not be trained here.
 */
export interface ArchSpec {
  kind: 'mlp';
  hidden: number[];
  text: string;
}

export function parseArch(text: string, flag = '--arch'): ArchSpec {
  const t = text.trim();
  if (t === 'linear') return { kind: 'mlp', hidden: [], text: t };
  const m = /^mlp:(.+)$/.exec(t);
  if (!m) throw new UsageError(`${flag}: unknown architecture "${text}" (expected mlp:H1,H2,... or linear)`);
  const hidden = m[1]!.split(',').map((s) => {
    const n = Number(s.trim());
    if (!/^\d+$/.test(s.trim()) || n < 1 || n > 16384) throw new UsageError(`${flag}: bad layer width "${s}" in "${text}" (expected an integer 1..16384)`);
    return n;
  });
  return { kind: 'mlp', hidden, text: t };
}

/** Forward FLOPs per example (multiply-adds counted as 2) for an MLP. */
export function mlpForwardFlops(arch: ArchSpec, inputSize: number, classes: number): number {
  const widths = [inputSize, ...arch.hidden, classes];
  let flops = 0;
  for (let i = 0; i + 1 < widths.length; i++) flops += 2 * widths[i]! * widths[i + 1]!;
  return flops;
}
