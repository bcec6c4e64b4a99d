import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DatasetError, encodeIdx, loadDataset, loadIdx, parseIdx, writeIdx } from '../../../shared/data/index.js';
import { tempDir } from './helpers.js';

// 5 images of 2x3 pixels with distinct values; labels 0..4 rotated.
const COUNT = 5;
const pixels = Uint8Array.from({ length: COUNT * 6 }, (_, i) => (i * 37) % 256);
const labelBytes = Uint8Array.from([3, 0, 4, 1, 2]);

describe('IDX', () => {
  let tmp: ReturnType<typeof tempDir>;
  let images: string;
  let labels: string;
  beforeAll(async () => {
    tmp = tempDir();
    images = tmp.path('img.idx');
    labels = tmp.path('lbl.idx');
    await writeIdx(images, [COUNT, 2, 3], pixels);
    await writeIdx(labels, [COUNT], labelBytes);
  });
  afterAll(() => tmp.cleanup());

  it('round-trips through writeIdx and loadIdx with 1/255 scaling', async () => {
    const ds = await loadDataset(`idx:${images},${labels}`);
    expect(ds.source).toBe(`idx:${images},${labels}`);
    expect(ds.count).toBe(COUNT);
    expect(ds.shape).toEqual([6]);
    expect(ds.scaling).toEqual({ scale: 1 / 255, offset: 0 });
    expect(Array.from(ds.features, (v) => Math.round(v * 255))).toEqual([...pixels]);
    for (let i = 0; i < ds.features.length; i++) expect(ds.features[i]).toBe(Math.fround(pixels[i]! / 255));
    expect([...ds.labels!]).toEqual([...labelBytes]);
    expect(ds.numClasses).toBe(5);
    expect(ds.labelNames).toBeUndefined();
  });

  it('reads gzipped files transparently', async () => {
    const gzImages = await (async () => {
      const p = tmp.path('img.idx.gz');
      await writeIdx(p, [COUNT, 2, 3], pixels, { gzip: true });
      return p;
    })();
    const gzLabels = tmp.write('lbl.gz', gzipSync(encodeIdx([COUNT], labelBytes)));
    const plain = await loadIdx(images, labels);
    const gz = await loadIdx(gzImages, gzLabels);
    expect([...gz.features]).toEqual([...plain.features]);
    expect([...gz.labels!]).toEqual([...plain.labels!]);
  });

  it('images alone are unlabeled; hwc gives [rows, cols, 1]; scaling can be overridden', async () => {
    const ds = await loadDataset(`idx:${images}`, { imageShape: 'hwc', scaling: { scale: 2 / 255, offset: -1 } });
    expect(ds.labels).toBeUndefined();
    expect(ds.numClasses).toBeUndefined();
    expect(ds.shape).toEqual([2, 3, 1]);
    expect(ds.features[1]).toBe(Math.fround((37 * 2) / 255 - 1));
  });

  it('applies limit and shuffleSeed, keeping image/label pairs aligned', async () => {
    const limited = await loadIdx(images, labels, { limit: 2 });
    expect(limited.count).toBe(2);
    expect([...limited.labels!]).toEqual([3, 0]);
    const a = await loadIdx(images, labels, { shuffleSeed: 11 });
    const b = await loadIdx(images, labels, { shuffleSeed: 11 });
    expect([...a.labels!]).toEqual([...b.labels!]);
    expect(a.numClasses).toBe(5);
    for (let k = 0; k < a.count; k++) {
      const i = labelBytes.indexOf(a.labels![k]!);
      expect(Math.round(a.features[k * 6]! * 255)).toBe(pixels[i * 6]);
    }
  });

  describe('malformed files', () => {
    const good = encodeIdx([COUNT, 2, 3], pixels);

    it('wrong magic number', async () => {
      const bad = Buffer.from(good);
      bad[0] = 0x50;
      const f = tmp.write('badmagic.idx', bad);
      await expect(loadIdx(f, undefined)).rejects.toThrow(new RegExp(`${f}: wrong magic number 0x50000803`));
      const t = Buffer.from(good);
      t[2] = 0x0d;
      expect(() => parseIdx(t, 'float.idx')).toThrow(/float\.idx: wrong magic number.*data type 0x0d/);
    });

    it('truncated data and header', async () => {
      const f = tmp.write('trunc.idx', good.subarray(0, good.length - 4));
      const err = await loadIdx(f, undefined).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DatasetError);
      expect((err as Error).message).toBe(`${f}: truncated: header says 5 x 2 x 3 (30 bytes of data) but only 26 bytes follow`);
      expect(() => parseIdx(good.subarray(0, 10), 'h.idx')).toThrow(/h\.idx: truncated: header declares 3 dimensions/);
      expect(() => parseIdx(good.subarray(0, 3), 'h.idx')).toThrow(/h\.idx: truncated/);
    });

    it('trailing bytes', () => {
      expect(() => parseIdx(Buffer.concat([good, Buffer.from([1, 2])]), 't.idx')).toThrow(/t\.idx: 2 unexpected trailing bytes/);
    });

    it('image and label counts that do not match', async () => {
      const f = tmp.write('lbl4.idx', encodeIdx([4], labelBytes.subarray(0, 4)));
      await expect(loadIdx(images, f)).rejects.toThrow(`image and label counts differ: ${images} has 5 images but ${f} has 4 labels`);
    });

    it('labels file swapped with images file', async () => {
      await expect(loadIdx(labels, undefined)).rejects.toThrow(/needs at least 2 dimensions/);
      await expect(loadIdx(images, images)).rejects.toThrow(/a label file must have 1 dimension/);
    });

    it('label out of range for a known class count', async () => {
      await expect(loadIdx(images, labels, { numClasses: 4 })).rejects.toThrow(`${labels}: label out of range: item 2 has label 4, expected 0..3`);
    });

    it('empty file, missing file, corrupt gzip', async () => {
      const empty = tmp.write('empty.idx', '');
      await expect(loadIdx(empty, undefined)).rejects.toThrow(`${empty}: empty file`);
      const missing = tmp.path('nope.idx');
      await expect(loadIdx(missing, undefined)).rejects.toThrow(`${missing}: file not found`);
      const gz = gzipSync(good);
      const corrupt = tmp.write('corrupt.gz', gz.subarray(0, gz.length - 10));
      await expect(loadIdx(corrupt, undefined)).rejects.toThrow(new RegExp(`${corrupt}: corrupt gzip data`));
    });
  });
});
