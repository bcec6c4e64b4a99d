/**
 * Image augmentations for the demo, as pure functions on square float images in [0, 1] (28×28 MNIST
 * by default). The same functions train the augmented teacher and build each device's distribution
 * shift, so "what the teacher was trained for" and "what the devices meet" are one definition.
 * Every function returns a new array and never touches its input.
 */

export const SIDE = 28;

const clamp01 = (v: number) => (v < 0 ? 0 : v > 1 ? 1 : v);

function pixel(img: Float32Array, side: number, x: number, y: number): number {
  return x < 0 || y < 0 || x >= side || y >= side ? 0 : img[y * side + x]!;
}

/** Rotates by `degrees` (counter-clockwise) about the image centre, bilinear, background 0. */
export function rotate(img: Float32Array, degrees: number, side = SIDE): Float32Array {
  const out = new Float32Array(side * side);
  const a = (degrees * Math.PI) / 180;
  const cos = Math.cos(a);
  const sin = Math.sin(a);
  const c = (side - 1) / 2;
  for (let y = 0; y < side; y++) {
    for (let x = 0; x < side; x++) {
      // Inverse mapping: where in the source does (x, y) come from.
      const dx = x - c;
      const dy = y - c;
      const sx = cos * dx + sin * dy + c;
      const sy = -sin * dx + cos * dy + c;
      const x0 = Math.floor(sx);
      const y0 = Math.floor(sy);
      const fx = sx - x0;
      const fy = sy - y0;
      const v =
        pixel(img, side, x0, y0) * (1 - fx) * (1 - fy) +
        pixel(img, side, x0 + 1, y0) * fx * (1 - fy) +
        pixel(img, side, x0, y0 + 1) * (1 - fx) * fy +
        pixel(img, side, x0 + 1, y0 + 1) * fx * fy;
      out[y * side + x] = v;
    }
  }
  return out;
}

/** Shifts by (dx, dy) whole pixels, background 0. */
export function translate(img: Float32Array, dx: number, dy: number, side = SIDE): Float32Array {
  const out = new Float32Array(side * side);
  for (let y = 0; y < side; y++) for (let x = 0; x < side; x++) out[y * side + x] = pixel(img, side, x - dx, y - dy);
  return out;
}

/**
 * Stroke thickness: `amount` > 0 dilates (grey-level max over a 3×3 cross) that many times, < 0 erodes
 * (min). Fractional amounts blend the last step, so thickness is a continuous parameter.
 */
export function thickness(img: Float32Array, amount: number, side = SIDE): Float32Array {
  let cur = Float32Array.from(img);
  const steps = Math.ceil(Math.abs(amount));
  for (let s = 0; s < steps; s++) {
    const next = new Float32Array(side * side);
    const grow = amount > 0;
    for (let y = 0; y < side; y++) {
      for (let x = 0; x < side; x++) {
        const n = [pixel(cur, side, x, y), pixel(cur, side, x - 1, y), pixel(cur, side, x + 1, y), pixel(cur, side, x, y - 1), pixel(cur, side, x, y + 1)];
        next[y * side + x] = grow ? Math.max(...n) : Math.min(...n);
      }
    }
    const frac = Math.abs(amount) - s;
    if (frac < 1) for (let i = 0; i < next.length; i++) next[i] = cur[i]! + (next[i]! - cur[i]!) * frac;
    cur = next;
  }
  return cur;
}

/** Adds Gaussian noise of standard deviation `sigma` (Box–Muller on `rand`), clipped to [0, 1]. */
export function noise(img: Float32Array, sigma: number, rand: () => number): Float32Array {
  const out = new Float32Array(img.length);
  for (let i = 0; i < img.length; i++) {
    const u = Math.max(rand(), 1e-12);
    const g = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
    out[i] = clamp01(img[i]! + sigma * g);
  }
  return out;
}

/** A distribution shift: a random transformation drawn per image. */
export interface Shift {
  name: string;
  description: string;
  apply(img: Float32Array, rand: () => number): Float32Array;
}

const uniform = (rand: () => number, lo: number, hi: number) => lo + (hi - lo) * rand();
const sign = (rand: () => number) => (rand() < 0.5 ? -1 : 1);

/** The three device shifts of the demo. */
export const SHIFTS: Record<'rotation' | 'thickness' | 'noise', Shift> = {
  rotation: {
    name: 'rotation',
    description: 'rotated by 20°–40° either way',
    apply: (img, rand) => rotate(img, sign(rand) * uniform(rand, 20, 40)),
  },
  thickness: {
    name: 'thickness',
    description: 'strokes thickened by 1.5–2.5 px, shifted ±1 px',
    apply: (img, rand) => translate(thickness(img, uniform(rand, 1.5, 2.5)), Math.round(uniform(rand, -1, 1)), Math.round(uniform(rand, -1, 1))),
  },
  noise: {
    name: 'noise',
    description: 'Gaussian noise σ 0.25–0.35, shifted ±2 px',
    apply: (img, rand) => noise(translate(img, Math.round(uniform(rand, -2, 2)), Math.round(uniform(rand, -2, 2))), uniform(rand, 0.25, 0.35), rand),
  },
};
export type ShiftName = keyof typeof SHIFTS;
export const SHIFT_NAMES = Object.keys(SHIFTS) as ShiftName[];

/**
 * The teacher's training augmentation: each of rotation (±50°), thickness (−0.5..3.5), translation
 * (±4 px) and noise (σ ≤ 0.5) applied independently with probability ~0.5, so the teacher sees clean
 * images as well as every shift and their combinations.
 */
export function teacherAugment(img: Float32Array, rand: () => number): Float32Array {
  let x = img;
  if (rand() < 0.5) x = thickness(x, uniform(rand, -0.5, 3.5));
  if (rand() < 0.5) x = rotate(x, uniform(rand, -50, 50));
  if (rand() < 0.5) x = translate(x, Math.round(uniform(rand, -4, 4)), Math.round(uniform(rand, -4, 4)));
  if (rand() < 0.4) x = noise(x, uniform(rand, 0, 0.5), rand);
  return x === img ? Float32Array.from(img) : x;
}

/** Applies `fn` to every image of a flat [count × size] array. */
export function mapImages(features: Float32Array, size: number, fn: (img: Float32Array, i: number) => Float32Array): Float32Array {
  const count = features.length / size;
  const out = new Float32Array(features.length);
  for (let i = 0; i < count; i++) out.set(fn(features.subarray(i * size, (i + 1) * size), i), i * size);
  return out;
}
