import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import type { InputSpec } from '../../../shared/protocol/schemas.js';
import { imageGeometry, inputThumbnail } from '../../../cloud/ui/thumbnail.js';

/** float32 little-endian, as examples store their inputs. */
const f32 = (xs: number[]): Buffer => Buffer.from(new Float32Array(xs).buffer);
const pixels = async (png: Buffer) => sharp(png).raw().toBuffer({ resolveWithObject: true });

describe('example thumbnails from stored tensors', () => {
  it('inverts an image spec exactly: (x·std + mean)·255 per channel, nchw', async () => {
    const spec: InputSpec = { shape: [3, 2, 2], dtype: 'float32', scaling: { scale: 1, offset: 0 }, raw: 'float32', image: { height: 2, width: 2, channels: 3, layout: 'nchw', mean: [0.5, 0.4, 0.3], std: [0.25, 0.2, 0.1] } };
    // Pixel (r, g, b) at each of the 4 positions, normalised the way preprocess.ts does.
    const rgb = [[255, 0, 10], [0, 255, 20], [128, 64, 30], [10, 200, 40]];
    const x: number[] = [];
    for (let c = 0; c < 3; c++) for (const p of rgb) x.push((p[c]! / 255 - spec.image!.mean[c]!) / spec.image!.std[c]!);
    const png = (await inputThumbnail(f32(x), spec, 2))!;
    const { data, info } = await pixels(png);
    expect(info).toMatchObject({ width: 2, height: 2, channels: 3 });
    expect([...data]).toEqual(rgb.flat());
  });

  it('stretches a flat 784-value input (no image spec) to a 28×28 greyscale, min → 0 and max → 255', async () => {
    const spec: InputSpec = { shape: [784], dtype: 'float32', scaling: { scale: 1 / 255, offset: 0 }, raw: 'uint8' };
    expect(imageGeometry(spec)).toMatchObject({ height: 28, width: 28, channels: 1 });
    const x = Array.from({ length: 784 }, (_, i) => (i === 0 ? -1 : i === 783 ? 3 : 1));
    const png = (await inputThumbnail(f32(x), spec, 28))!;
    expect(await sharp(png).metadata()).toMatchObject({ width: 28, height: 28, channels: 1 });
    const data = await sharp(png).extractChannel(0).raw().toBuffer();
    expect([data[0], data[783], data[400]]).toEqual([0, 255, 128]);
  });

  it('draws nothing for malformed or non-image inputs', async () => {
    const flat: InputSpec = { shape: [784], dtype: 'float32', scaling: { scale: 1, offset: 0 }, raw: 'float32' };
    expect(await inputThumbnail(Buffer.alloc(784 * 4 - 1), flat)).toBeUndefined(); // truncated tensor
    expect(await inputThumbnail(Buffer.alloc(785 * 4), flat)).toBeUndefined(); // too long
    expect(await inputThumbnail(Buffer.alloc(0), flat)).toBeUndefined();
    expect(imageGeometry({ ...flat, shape: [4] })).toBeUndefined(); // 2×2 is not worth drawing
    expect(imageGeometry({ ...flat, shape: [10] })).toBeUndefined(); // not square
    expect(imageGeometry({ ...flat, shape: [2, 3, 4] })).toBeUndefined(); // 3-d without an image spec
    // NaN and infinities become black, not an exception.
    const png = await inputThumbnail(f32(Array.from({ length: 784 }, (_, i) => (i % 2 ? Number.NaN : Infinity))), flat, 28);
    expect(png).toBeDefined();
  });
});

describe('example thumbnails from source images (issue 11)', () => {
  const flat: InputSpec = { shape: [64], dtype: 'float32', scaling: { scale: 1, offset: 0 }, raw: 'float32' };
  it('draws the stored source image when there is one, and the tensor when it is unreadable', async () => {
    const red = await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 255, g: 0, b: 0 } } }).png().toBuffer();
    const fromSource = (await inputThumbnail(f32(new Array(64).fill(0)), flat, 8, red))!;
    const { data, info } = await pixels(fromSource);
    expect(info).toMatchObject({ width: 8, height: 8, channels: 3 });
    expect([data[0], data[1], data[2]]).toEqual([255, 0, 0]);
    // A broken source falls back to the tensor (all zeros: black, one channel).
    const fallback = (await inputThumbnail(f32(new Array(64).fill(0)), flat, 8, Buffer.from('not a png')))!;
    expect(await sharp(fallback).metadata()).toMatchObject({ width: 8, height: 8, channels: 1 });
  });
});
