import { describe, expect, it } from 'vitest';
import { modelFlops } from '../../../cloud/models/flops.js';
import { imageShapeOf, parseArch } from '../../../cloud/models/spec.js';
import { UsageError } from '../../../shared/cli/errors.js';

describe('architecture grammar', () => {
  it('parses mlp and linear specs', () => {
    expect(parseArch('mlp:800,800').hidden).toEqual([800, 800]);
    expect(parseArch(' mlp:64 ').hidden).toEqual([64]);
    expect(parseArch('linear').hidden).toEqual([]);
    expect(parseArch('mlp:64').kind).toBe('mlp');
  });

  it('parses cnn and dscnn specs with an optional dense width', () => {
    expect(parseArch('cnn:16,32')).toEqual({ kind: 'cnn', filters: [16, 32], hidden: [], text: 'cnn:16,32' });
    expect(parseArch('cnn:8/32')).toEqual({ kind: 'cnn', filters: [8], hidden: [32], text: 'cnn:8/32' });
    expect(parseArch('dscnn:16,32,64/64')).toMatchObject({ kind: 'dscnn', filters: [16, 32, 64], hidden: [64] });
  });

  it.each(['mlp:', 'mlp:0', 'mlp:8,,8', 'mlp:1.5', 'mlp:99999', 'mlp:-4', 'resnet', 'cnn:', 'cnn:0', 'cnn:2000', 'cnn:8/', 'cnn:8/4,4', 'cnn:/8', 'dscnn:8//4', 'cnn8'])(
    'rejects %s with a UsageError naming the flag',
    (bad) => {
      expect(() => parseArch(bad, '--student')).toThrow(UsageError);
      expect(() => parseArch(bad, '--student')).toThrow(/--student/);
    },
  );

  it('reads the image shape from the input spec', () => {
    expect(imageShapeOf([28, 28, 1])).toEqual([28, 28, 1]);
    expect(imageShapeOf([784])).toEqual([28, 28, 1]);
    expect(imageShapeOf([8, 6, 3])).toEqual([8, 6, 3]);
    expect(() => imageShapeOf([10])).toThrow(/image input/);
    expect(() => imageShapeOf([4, 4])).toThrow(UsageError);
    // The input spec's image form wins: a flat 64×48×3 RGB image, NHWC.
    expect(imageShapeOf([9216], 'studentSpec', { height: 64, width: 48, channels: 3, layout: 'nhwc' })).toEqual([64, 48, 3]);
    expect(() => imageShapeOf([3, 8, 8], 'studentSpec', { height: 8, width: 8, channels: 3, layout: 'nchw' })).toThrow(/studentSpec: conv students read NHWC images; the model's image layout is nchw/);
  });
});

describe('FLOP counts', () => {
  it('MLP: forward 2·MACs; training skips the first layer input gradient', () => {
    const f = modelFlops(parseArch('mlp:100'), [784], 10);
    expect(f.forward).toBe(2 * (784 * 100 + 100 * 10));
    // forward + weight gradients (= forward) + input gradient of the second layer only.
    expect(f.training).toBe(2 * f.forward + 2 * 100 * 10);
    expect(f.training).toBeLessThan(3 * f.forward);
  });

  it('cnn and dscnn: conv MACs per output pixel, pooling halves the side', () => {
    const cnn = modelFlops(parseArch('cnn:4,8'), [8, 8, 1], 3);
    const conv1 = 8 * 8 * 9 * 1 * 4;
    const conv2 = 4 * 4 * 9 * 4 * 8;
    const dense = 2 * 2 * 8 * 3;
    expect(cnn.forward).toBe(2 * (conv1 + conv2 + dense));
    expect(cnn.training).toBe(2 * cnn.forward + 2 * (conv2 + dense));
    const ds = modelFlops(parseArch('dscnn:4'), [8, 8, 2], 3);
    const dw = 8 * 8 * 9 * 2;
    const pw = 8 * 8 * 2 * 4;
    expect(ds.forward).toBe(2 * (dw + pw + 4 * 4 * 4 * 3));
    expect(ds.training).toBe(2 * ds.forward + 2 * (pw + 4 * 4 * 4 * 3));
  });
});
