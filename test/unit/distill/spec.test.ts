import { describe, expect, it } from 'vitest';
import { mlpForwardFlops, parseArch } from '../../../cloud/models/spec.js';
import { UsageError } from '../../../shared/cli/errors.js';

describe('architecture grammar', () => {
  it('parses mlp and linear specs', () => {
    expect(parseArch('mlp:800,800').hidden).toEqual([800, 800]);
    expect(parseArch(' mlp:64 ').hidden).toEqual([64]);
    expect(parseArch('linear').hidden).toEqual([]);
  });

  it.each(['mlp:', 'mlp:0', 'mlp:8,,8', 'mlp:1.5', 'mlp:99999', 'cnn:32', 'mlp:-4', 'resnet'])('rejects %s with a UsageError naming the flag', (bad) => {
    expect(() => parseArch(bad, '--student')).toThrow(UsageError);
    expect(() => parseArch(bad, '--student')).toThrow(/--student/);
  });

  it('counts forward FLOPs', () => {
    expect(mlpForwardFlops(parseArch('mlp:100'), 784, 10)).toBe(2 * (784 * 100 + 100 * 10));
  });
});
