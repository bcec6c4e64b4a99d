import type { ArchSpec, ImageShape } from './spec.js';

/**
 * FLOPs (a multiply-add counts 2) of the layers that carry weights, per example.
 *
 * `forward` is inference. `training` counts the gradient ops tfjs actually runs per step: the forward
 * pass, each layer's weight gradient (same MACs as its forward), and each layer's input gradient
 * except the first layer's, which tfjs never computes because the input is not a variable. Pooling,
 * ReLU, bias and the loss are elementwise and left out (well under 1% for these models), so the rates
 * derived from this are matMul/conv rates.
 */
export interface FlopCount {
  forward: number;
  training: number;
}

interface Layer {
  macs: number;
}

function layers(arch: ArchSpec, inputShape: number[], classes: number): Layer[] {
  const out: Layer[] = [];
  let flat = inputShape.reduce((a, b) => a * b, 1);
  if (arch.kind !== 'mlp') {
    let [h, w, c] = inputShape.length === 3 ? (inputShape as ImageShape) : [Math.round(Math.sqrt(flat)), Math.round(Math.sqrt(flat)), 1];
    for (const f of arch.filters) {
      if (arch.kind === 'cnn') out.push({ macs: h * w * 9 * c * f });
      else out.push({ macs: h * w * 9 * c }, { macs: h * w * c * f }); // depthwise, then pointwise
      c = f;
      // 2×2 max-pool with 'valid' padding (tfjs default) floors odd sizes.
      h = Math.floor(h / 2);
      w = Math.floor(w / 2);
    }
    flat = h * w * c;
  }
  for (const units of [...arch.hidden, classes]) {
    out.push({ macs: flat * units });
    flat = units;
  }
  return out;
}

export function modelFlops(arch: ArchSpec, inputShape: number[], classes: number): FlopCount {
  const ls = layers(arch, inputShape, classes);
  const forward = ls.reduce((a, l) => a + 2 * l.macs, 0);
  const inputGrads = ls.slice(1).reduce((a, l) => a + 2 * l.macs, 0);
  return { forward, training: 2 * forward + inputGrads };
}
