import { z } from 'zod';

/**
 * Random affine augmentation of square single-channel images (rotation, translation, scale), drawn per
 * example. Used with function matching (trainer.ts `teacher`): the teacher scores exactly the augmented
 * view the student sees, so an augmented image never carries the label of the image it came from.
 */

/** A line's augmentation family (distill settings `cohorts[i].augment` / `cohortAugment`). */
export const augmentSchema = z
  .strictObject({
    /** Rotate by an angle drawn uniformly from [−rotate, rotate] degrees. */
    rotate: z.number().min(0).max(180).default(0),
    /** Translate by (dx, dy), each drawn uniformly from [−shift, shift] pixels (sub-pixel, bilinear). */
    shift: z.number().min(0).max(8).default(0),
    /** Scale by a factor drawn uniformly from [1 − scale, 1 + scale]. */
    scale: z.number().min(0).max(0.5).default(0),
    /** Share of the examples augmented; the others are seen as they are. */
    probability: z.number().gt(0).max(1).default(1),
  })
  .refine((a) => a.rotate > 0 || a.shift > 0 || a.scale > 0, { message: 'augment needs at least one of rotate, shift, scale above 0' });

export type Augment = z.output<typeof augmentSchema>;

/**
 * Writes `src` (one side×side image at `srcOff`) transformed by rotation `degrees` (counter-clockwise),
 * scale `scale` and translation (dx, dy) about the image centre into `dst` at `dstOff`: bilinear, and
 * pixels from outside the image take the image's minimum (its background, whatever the scaling).
 */
export function affineInto(src: Float32Array, srcOff: number, dst: Float32Array, dstOff: number, side: number, degrees: number, scale: number, dx: number, dy: number): void {
  let bg = Infinity;
  for (let i = 0; i < side * side; i++) bg = Math.min(bg, src[srcOff + i]!);
  const px = (x: number, y: number) => (x < 0 || y < 0 || x >= side || y >= side ? bg : src[srcOff + y * side + x]!);
  const a = (degrees * Math.PI) / 180;
  // Inverse map: output (x, y) reads the source at R(−a)·((x, y) − c − d) / scale + c.
  const cos = Math.cos(a) / scale;
  const sin = Math.sin(a) / scale;
  const c = (side - 1) / 2;
  for (let y = 0; y < side; y++) {
    const oy = y - c - dy;
    for (let x = 0; x < side; x++) {
      const ox = x - c - dx;
      const sx = cos * ox + sin * oy + c;
      const sy = -sin * ox + cos * oy + c;
      const x0 = Math.floor(sx);
      const y0 = Math.floor(sy);
      const fx = sx - x0;
      const fy = sy - y0;
      dst[dstOff + y * side + x] =
        px(x0, y0) * (1 - fx) * (1 - fy) + px(x0 + 1, y0) * fx * (1 - fy) + px(x0, y0 + 1) * (1 - fx) * fy + px(x0 + 1, y0 + 1) * fx * fy;
    }
  }
}

/** Draws one transformation of `aug` with `rand` and writes the augmented image (or a copy, when this example is not augmented). */
export function augmentInto(aug: Augment, src: Float32Array, srcOff: number, dst: Float32Array, dstOff: number, side: number, rand: () => number): void {
  const n = side * side;
  if (aug.probability < 1 && rand() >= aug.probability) {
    dst.set(src.subarray(srcOff, srcOff + n), dstOff);
    return;
  }
  const u = () => 2 * rand() - 1;
  affineInto(src, srcOff, dst, dstOff, side, aug.rotate * u(), 1 + aug.scale * u(), aug.shift * u(), aug.shift * u());
}

/** "rotate ±30°, shift ±2 px, scale ±10%, p 0.5": for progress lines and lineage. */
export function describeAugment(a: Augment): string {
  const parts = [a.rotate > 0 ? `rotate ±${a.rotate}°` : '', a.shift > 0 ? `shift ±${a.shift} px` : '', a.scale > 0 ? `scale ±${Math.round(a.scale * 100)}%` : '', a.probability < 1 ? `p ${a.probability}` : ''];
  return parts.filter(Boolean).join(', ');
}
