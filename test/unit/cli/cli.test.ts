import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../../helpers/cli.js';

const tmp = mkdtempSync(join(tmpdir(), 'apprentice-cli-'));

describe('apprentice CLI', () => {
  it('prints help with exit 0 for the program and every subcommand', async () => {
    for (const args of [['--help'], ['distill', '--help'], ['teacher', 'train', '--help'], ['data', 'inspect', '--help']]) {
      const r = await runCli(args);
      expect(r.code, args.join(' ')).toBe(0);
      expect(r.stdout).toMatch(/Usage: apprentice/);
    }
  });

  it.each([
    [['--no-such-flag'], /unknown option/],
    [['frobnicate'], /unknown command/],
    [['distill', '--teacher', 't.onnx'], /required option/],
    [['distill', '--teacher', 't.onnx', '--data', 'mnist:train', '--test', 'mnist:test', '--student', 'mlp:0', '--out', tmp], /--student: bad layer width/],
    [['distill', '--teacher', 't.onnx', '--data', 'mnist:train', '--test', 'mnist:test', '--student', 'mlp:8', '--epochs', 'ten', '--out', tmp], /--epochs: expected a positive integer/],
    [['distill', '--teacher', 't.onnx', '--data', 'mnist:train', '--test', 'mnist:test', '--student', 'mlp:8', '--alpha', '1.5', '--out', tmp], /--alpha: must be <= 1/],
    [['distill', '--teacher', 't.onnx', '--data', 'mnist:train', '--test', 'mnist:test', '--student', 'cnn:8/', '--out', tmp], /--student: unknown architecture "cnn:8\/"/],
    [['distill', '--teacher', 't.onnx', '--data', 'mnist:train', '--test', 'mnist:test', '--student', 'mlp:8', '--recipes', '4:2', '--out', tmp], /--recipes: bad candidate "4:2"/],
    [['distill', '--teacher', 't.onnx', '--data', 'mnist:train', '--test', 'mnist:test', '--student', 'mlp:8', '--recipe', 'grid', '--out', tmp], /--recipe <mode>' argument 'grid' is invalid/],
    [['distill', '--teacher', 't.onnx', '--data', 'mnist:train', '--test', 'mnist:test', '--student', 'mlp:8', '--search-minutes', '-1', '--out', tmp], /--search-minutes/],
    [['distill', '--teacher', join(tmp, 'missing.onnx'), '--data', 'mnist:train', '--limit', '100', '--test', 'mnist:test', '--student', 'mlp:8', '--out', tmp], /missing\.onnx: cannot read teacher model/],
    [['teacher', 'train', '--data', 'nope:x', '--out', join(tmp, 't.onnx')], /nope/],
    [['data', 'inspect', `idx:${join(tmp, 'none.idx')}`], /none\.idx/],
    [['distill', '--backend', 'gpu'], /Allowed choices/],
  ])('exits 2 with a one-line reason for %j', async (args, message) => {
    const r = await runCli(args as string[]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message as RegExp);
    expect(r.stderr.trim().split('\n').filter((l) => l.startsWith('error')).length).toBe(1);
  });

  it('rejects a teacher file that is not ONNX with exit 2', async () => {
    const bad = join(tmp, 'garbage.onnx');
    writeFileSync(bad, 'this is not a protobuf');
    const r = await runCli(['distill', '--teacher', bad, '--data', 'mnist:test', '--limit', '50', '--test', 'mnist:test', '--student', 'mlp:8', '--out', join(tmp, 'o')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/garbage\.onnx: not a loadable ONNX model/);
  });

  it('inspects a dataset', async () => {
    const r = await runCli(['data', 'inspect', 'mnist:test', '--json']);
    expect(r.code).toBe(0);
    const info = JSON.parse(r.stdout);
    expect(info.count).toBe(10000);
    expect(info.shape).toEqual([784]);
    expect(info.numClasses).toBe(10);
  });
});
