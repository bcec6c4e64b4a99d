import { UsageError } from '../../shared/cli/errors.js';

/**
 * Architecture grammar for teachers and students (documented in the README):
 *
 *   spec    := "linear" | "mlp:" widths | ("cnn:" | "dscnn:") widths ["/" width]
 *   widths  := width ("," width)*         e.g. mlp:800,800   mlp:64   cnn:16,32   dscnn:16,32/64
 *   width   := integer 1..16384 (conv filters: 1..1024)
 *
 * `mlp:H1,...,Hk` is input → Dense(H1, relu) → … → Dense(Hk, relu) → Dense(classes) producing logits.
 * `linear` is multinomial logistic regression (no hidden layer). Dropout is a training option, not
 * part of the architecture, because the exported model never contains it.
 *
 * `cnn:F1,...,Fk[/H]`: the flat input is reshaped to the model's H×W×C image, then per block a 3×3
 * conv with F filters (same padding, ReLU) and a 2×2 max-pool; then Flatten, an optional
 * Dense(H, relu), and Dense(classes). `dscnn:` is the same with depthwise-separable blocks (3×3
 * depthwise, 1×1 pointwise to F, bias, ReLU), MobileNet style.
 */
export type ArchKind = 'mlp' | 'cnn' | 'dscnn';

export interface ArchSpec {
  kind: ArchKind;
  /** Conv filters per block (empty for MLPs). */
  filters: number[];
  /** Dense hidden widths after the conv blocks (or the whole MLP). */
  hidden: number[];
  text: string;
}

function widths(list: string, text: string, flag: string, max: number): number[] {
  return list.split(',').map((s) => {
    const n = Number(s.trim());
    if (!/^\d+$/.test(s.trim()) || n < 1 || n > max) throw new UsageError(`${flag}: bad layer width "${s}" in "${text}" (expected an integer 1..${max})`);
    return n;
  });
}

export function parseArch(text: string, flag = '--arch'): ArchSpec {
  const t = text.trim();
  if (t === 'linear') return { kind: 'mlp', filters: [], hidden: [], text: t };
  const mlp = /^mlp:(.+)$/.exec(t);
  if (mlp) return { kind: 'mlp', filters: [], hidden: widths(mlp[1]!, text, flag, 16384), text: t };
  const conv = /^(cnn|dscnn):([^/]+)(?:\/(.+))?$/.exec(t);
  if (conv) {
    const hidden = conv[3] === undefined ? [] : widths(conv[3], text, flag, 16384);
    if (hidden.length > 1) throw new UsageError(`${flag}: "${text}" has more than one dense width after "/" (expected ${conv[1]}:F1,F2,.../H)`);
    return { kind: conv[1] as ArchKind, filters: widths(conv[2]!, text, flag, 1024), hidden, text: t };
  }
  throw new UsageError(`${flag}: unknown architecture "${text}" (expected linear, mlp:H1,H2,..., cnn:F1,F2,...[/H] or dscnn:F1,F2,...[/H])`);
}

export const isConv = (arch: ArchSpec): boolean => arch.kind !== 'mlp';

/** Height, width, channels of a conv student's input. */
export type ImageShape = [number, number, number];

/**
 * The image shape a conv student reads, from the model's input spec: its image form when present
 * (NHWC only: the student's first layer reshapes the flat input as H×W×C), else the shape [H, W, C]
 * as given, or a flat [N] that is a perfect square, read as an N-pixel greyscale square (MNIST's
 * [784] → 28×28×1).
 */
export function imageShapeOf(shape: readonly number[], flag = '--student', image?: { height: number; width: number; channels: number; layout: 'nhwc' | 'nchw' }): ImageShape {
  if (image) {
    if (image.layout !== 'nhwc') throw new UsageError(`${flag}: conv students read NHWC images; the model's image layout is ${image.layout}`);
    return [image.height, image.width, image.channels];
  }
  if (shape.length === 3) return [shape[0]!, shape[1]!, shape[2]!];
  const size = shape.reduce((a, b) => a * b, 1);
  const side = Math.round(Math.sqrt(size));
  if (shape.length === 1 && side * side === size) return [side, side, 1];
  throw new UsageError(`${flag}: a conv student needs an image input (H×W×C, or a flat square greyscale image); the input shape is [${shape.join(', ')}]`);
}
