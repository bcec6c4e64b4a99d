import { describe, expect, it } from 'vitest';
import { inputSpecSchema } from '../../../shared/protocol/index.js';

const base = { dtype: 'float32', scaling: { scale: 1 / 255, offset: 0 }, raw: 'uint8' } as const;
const rgb = { height: 4, width: 6, channels: 3, layout: 'nchw', mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] } as const;

describe('input spec, image form (issue 11)', () => {
  it('accepts an image form matching the shape: flat, [C, H, W] for nchw, [H, W, C] for nhwc', () => {
    expect(inputSpecSchema.parse({ ...base, shape: [3, 4, 6], image: rgb }).image).toEqual(rgb);
    expect(inputSpecSchema.parse({ ...base, shape: [72], image: rgb }).image?.layout).toBe('nchw');
    expect(inputSpecSchema.parse({ ...base, shape: [4, 6, 3], image: { ...rgb, layout: 'nhwc' } }).image?.layout).toBe('nhwc');
  });

  it('is optional and additive: a spec without it parses to exactly what it was', () => {
    const plain = { ...base, shape: [784] };
    expect(inputSpecSchema.parse(plain)).toEqual(plain);
  });

  it.each([
    ['shape in the other layout', { shape: [4, 6, 3], image: rgb }, /must match shape/],
    ['wrong flat size', { shape: [71], image: rgb }, /must match shape/],
    ['one mean for three channels', { shape: [72], image: { ...rgb, mean: [0.5] } }, /one value per channel/],
    ['zero std', { shape: [72], image: { ...rgb, std: [0.2, 0, 0.2] } }, /must be > 0/],
    ['two channels', { shape: [48], image: { ...rgb, channels: 2, mean: [0, 0], std: [1, 1] } }, /.+/],
    ['unknown layout', { shape: [72], image: { ...rgb, layout: 'chwn' } }, /.+/],
    ['an unknown key', { shape: [72], image: { ...rgb, gamma: 2.2 } }, /gamma/],
  ])('refuses %s', (_what, spec, message) => {
    const r = inputSpecSchema.safeParse({ ...base, ...spec });
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error?.issues)).toMatch(message);
  });
});
