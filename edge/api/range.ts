import type { Manifest } from '../../shared/protocol/index.js';
import { ApiError } from './errors.js';

/**
 * The manifest's `input.range` (issue 10, health gate): the inclusive [min, max] of raw input values
 * the model is meant for. Requests with any value outside it are refused with a 400 before they reach
 * the model, so a request of ±3e38 can neither make a good model output NaN nor be blamed on it.
 * `data` is already scaled (x·scale + offset), so the bounds are scaled the same way.
 */
export function scaledRange(manifest: Manifest): [number, number] | undefined {
  const r = manifest.input.range;
  if (!r) return undefined;
  const { scale, offset } = manifest.input.scaling;
  const a = r[0] * scale + offset;
  const b = r[1] * scale + offset;
  const [lo, hi] = a <= b ? [a, b] : [b, a];
  // float32 rounding of a value exactly on the bound must not refuse it.
  const slack = Math.max(Math.abs(lo), Math.abs(hi), 1) * 1e-6;
  return [lo - slack, hi + slack];
}

/** Throws a 400 `out_of_range` naming the first value outside the manifest's input range. */
export function checkInputRange(data: Float32Array, n: number, manifest: Manifest, field: string): void {
  const b = scaledRange(manifest);
  if (!b) return;
  const [lo, hi] = b;
  for (let i = 0; i < data.length; i++) {
    const x = data[i]!;
    if (x >= lo && x <= hi) continue;
    const size = data.length / n;
    const [rlo, rhi] = manifest.input.range!;
    const where = n === 1 ? `${field}.${i}` : `${field}.${Math.floor(i / size)}.${i % size}`;
    throw new ApiError(400, 'out_of_range', `value ${x} (scaled) is outside the model's input range [${rlo}, ${rhi}] (raw; [${lo.toPrecision(6)}, ${hi.toPrecision(6)}] scaled)`, where);
  }
}
