import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UsageError } from '../../../shared/cli/errors.js';
import { DatasetError, loadDataset, MNIST_LABEL_NAMES } from '../../../shared/data/index.js';
import { tempDir } from './helpers.js';

describe('loadDataset: mnist', () => {
  it('mnist:test loads 10000 examples of shape [784] in [0, 1] with every digit', async () => {
    const ds = await loadDataset('mnist:test');
    expect(ds.source).toBe('mnist:test');
    expect(ds.count).toBe(10000);
    expect(ds.shape).toEqual([784]);
    expect(ds.features.length).toBe(10000 * 784);
    expect(ds.scaling).toEqual({ scale: 1 / 255, offset: 0 });
    let min = Infinity;
    let max = -Infinity;
    for (const v of ds.features) {
      if (v < min) min = v;
      if (v > max) max = v;
    }
    expect(min).toBe(0);
    expect(max).toBe(1);
    const seen = new Set(ds.labels);
    expect([...seen].sort()).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(ds.numClasses).toBe(10);
    expect(ds.labelNames).toEqual([...MNIST_LABEL_NAMES]);
    // The first MNIST test digit is a 7.
    expect(ds.labels![0]).toBe(7);
  });

  it('mnist:train with hwc shape, shuffle and limit', async () => {
    const a = await loadDataset('mnist:train', { imageShape: 'hwc', shuffleSeed: 1, limit: 100 });
    const b = await loadDataset('mnist:train', { imageShape: 'hwc', shuffleSeed: 1, limit: 100 });
    expect(a.count).toBe(100);
    expect(a.shape).toEqual([28, 28, 1]);
    expect([...a.labels!]).toEqual([...b.labels!]);
    expect(a.features).toEqual(b.features);
    const first = await loadDataset('mnist:train', { limit: 100 });
    expect([...a.labels!]).not.toEqual([...first.labels!]);
    expect(first.labels![0]).toBe(5); // the first MNIST training digit is a 5
  });

  it('unlabeled: drops labels', async () => {
    const ds = await loadDataset('unlabeled:mnist:test', { limit: 10 });
    expect(ds.source).toBe('unlabeled:mnist:test');
    expect(ds.count).toBe(10);
    expect(ds.labels).toBeUndefined();
    expect(ds.labelNames).toBeUndefined();
    expect(ds.numClasses).toBeUndefined();
  });
});

describe('loadDataset: specs', () => {
  let tmp: ReturnType<typeof tempDir>;
  beforeAll(() => {
    tmp = tempDir();
  });
  afterAll(() => tmp.cleanup());

  it('unlabeled: wraps csv', async () => {
    const f = tmp.write('t.csv', 'a,label\n1,0\n2,1\n');
    const ds = await loadDataset(`unlabeled:csv:${f}`);
    expect(ds.labels).toBeUndefined();
    expect([...ds.features]).toEqual([1, 2]);
  });

  it.each([
    ['foo:bar', /unknown dataset scheme "foo"/],
    ['mnist.csv', /has no scheme/],
    ['mnist:validation', /unknown MNIST split "validation"/],
    ['csv:', /missing its argument/],
    ['idx:a,b,c', /expected idx:IMAGES or idx:IMAGES,LABELS/],
    ['unlabeled:nope:x', /unknown dataset scheme "nope"/],
  ])('rejects %s', async (spec, message) => {
    const err = await loadDataset(spec).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DatasetError);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toMatch(message);
  });

  it('missing idx file', async () => {
    const missing = tmp.path('nope-images');
    await expect(loadDataset(`idx:${missing}`)).rejects.toThrow(`${missing}: file not found`);
  });
});
