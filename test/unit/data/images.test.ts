import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DatasetError, loadDataset } from '../../../shared/data/index.js';
import type { ImageSpec } from '../../../shared/protocol/index.js';
import { tempDir } from './helpers.js';

/** An 8×8 grey PNG filled with `v`, or an RGB one when `rgb` is given. */
const greyPng = (v: number, side = 8) => sharp(Buffer.alloc(side * side, v), { raw: { width: side, height: side, channels: 1 } }).toColourspace('b-w').png().toBuffer();
const rgbJpeg = (side = 8) => sharp({ create: { width: side, height: side, channels: 3, background: '#ff0000' } }).jpeg({ quality: 100 }).toBuffer();

let t: ReturnType<typeof tempDir>;
beforeEach(() => {
  t = tempDir();
});
afterEach(() => t.cleanup());

async function put(rel: string, bytes: Uint8Array | string): Promise<void> {
  const file = join(t.dir, rel);
  mkdirSync(join(file, '..'), { recursive: true });
  writeFileSync(file, bytes);
}

async function expectRefused(spec: string, message: RegExp): Promise<void> {
  const err = await loadDataset(spec).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(DatasetError);
  expect((err as Error).message).toMatch(message);
}

describe('images:DIR (ImageFolder layout)', () => {
  it('loads one folder per class, folder names as labels in code-point order, pixels scaled like IDX', async () => {
    await put('cat/a.png', await greyPng(255));
    await put('cat/b.png', await greyPng(51));
    await put('Bird/x.png', await greyPng(0));
    await put('.DS_Store', 'ignored: hidden');
    const ds = await loadDataset(`images:${t.dir}`);
    expect(ds.labelNames).toEqual(['Bird', 'cat']);
    expect(ds.numClasses).toBe(2);
    expect(ds.count).toBe(3);
    expect(ds.shape).toEqual([8, 8, 1]);
    expect(Array.from(ds.labels!)).toEqual([0, 1, 1]);
    expect(ds.features[0]).toBe(0);
    expect(ds.features[64]).toBeCloseTo(1, 6);
    expect(ds.features[128]).toBeCloseTo(0.2, 6);
    expect(ds.scaling).toEqual({ scale: 1 / 255, offset: 0 });
    expect(ds.source).toBe(`images:${t.dir}`);
  });

  it("resizes every image to the model's input.image (size, channels, layout, mean/std), with limit and shuffle", async () => {
    await put('a/1.png', await greyPng(255, 20));
    await put('a/2.jpg', await rgbJpeg(13));
    await put('b/3.jpeg', await rgbJpeg(8));
    const image: ImageSpec = { height: 4, width: 4, channels: 3, layout: 'nchw', mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] };
    const ds = await loadDataset(`images:${t.dir}`, { image });
    expect(ds.shape).toEqual([3, 4, 4]);
    expect(ds.features).toHaveLength(3 * 48);
    expect(ds.features[0]).toBeCloseTo(1, 5); // white grey → 1 in every channel
    expect(ds.features[48]).toBeCloseTo(1, 1); // red JPEG: R ≈ 1
    expect(ds.features[48 + 16]).toBeCloseTo(-1, 1); // G ≈ -1
    expect(ds.scaling).toEqual({ scale: 1 / 127.5, offset: -1 });
    const flat = await loadDataset(`images:${t.dir}`, { image, imageShape: 'flat', limit: 2, shuffleSeed: 3 });
    expect(flat.shape).toEqual([48]);
    expect(flat.count).toBe(2);
  });

  it.each([
    ['a missing directory', (_: string) => undefined, 'nope', /directory not found/],
    ['an empty directory', (_: string) => undefined, '', /found 0 class folder/],
    ['a single class', async () => put('only/a.png', await greyPng(1)), '', /found 1 class folder/],
    ['a stray file beside the class folders', async () => { await put('a/1.png', await greyPng(1)); await put('b/1.png', await greyPng(1)); await put('labels.txt', 'x'); }, '', /unexpected file "labels.txt"/],
    ['a non-image file in a class folder', async () => { await put('a/1.png', await greyPng(1)); await put('b/notes.txt', 'x'); }, '', /unexpected file "notes.txt"/],
    ['an empty class folder', async () => { await put('a/1.png', await greyPng(1)); mkdirSync(join(t.dir, 'b')); }, '', /empty class folder/],
    ['a truncated PNG', async () => { await put('a/1.png', await greyPng(1)); await put('b/2.png', (await greyPng(1)).subarray(0, 40)); }, '', /2\.png: cannot (read|decode)/],
    ['a text file named .png', async () => { await put('a/1.png', await greyPng(1)); await put('b/2.png', 'hello'); }, '', /2\.png: not a PNG or JPEG/],
    ['images of different sizes without input.image', async () => { await put('a/1.png', await greyPng(1)); await put('b/2.png', await greyPng(1, 9)); }, '', /2\.png: is 9×9, but the first image is 8×8/],
  ])('refuses %s with a DatasetError naming the problem', async (_what, setup, sub, message) => {
    await setup(t.dir);
    await expectRefused(`images:${join(t.dir, sub)}`, message);
  });

  it('refuses an image past the pixel bound before decoding it', async () => {
    await put('a/1.png', await greyPng(1));
    const big = Buffer.from(await greyPng(1));
    const { crc32 } = await import('node:zlib');
    big.writeUInt32BE(90_000, 16);
    big.writeUInt32BE(90_000, 20);
    big.writeUInt32BE(crc32(big.subarray(12, 29)), 29);
    await put('b/bomb.png', big);
    await expectRefused(`images:${t.dir}`, /bomb\.png: 90000×90000 = 8100000000 pixels exceeds the limit/);
  });
});
