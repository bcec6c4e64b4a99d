import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startCloudServer } from '../../../cloud/api/server.js';
import { releaseCommand } from '../../../cloud/rounds/release-cli.js';
import { releases } from '../../../cloud/registry/schema.js';
import { denseModel, garbageModel } from '../../fixtures/onnx-models.js';
import { harness, seedModel, TOKEN, type Harness } from './helpers.js';
import { captureProgram, type CapturedRun } from '../../helpers/capture-program.js';

/** `apprentice release push` in-process, through the real API app (real ORT, real SQLite). */
describe('apprentice release push', () => {
  let h: Harness;
  let fetchImpl: typeof fetch;
  beforeEach(() => {
    h = harness();
    seedModel(h);
    fetchImpl = ((input: string | URL | Request, init?: RequestInit) => Promise.resolve(h.app.request(String(input), init))) as typeof fetch;
  });
  afterEach(() => h.close());

  async function run(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    return runWith(fetchImpl, ...argv);
  }
  const runWith = (fetchFn: typeof fetch | undefined, ...argv: string[]): Promise<CapturedRun> => captureProgram(new Command('apprentice').addCommand(releaseCommand({ fetchImpl: fetchFn, env: {} })), ['release', 'push', ...argv]);
  const api = ['--cloud', 'http://cloud.test', '--token', TOKEN];
  const file = (name: string, bytes: Uint8Array): string => {
    const p = join(h.dir, name);
    writeFileSync(p, bytes);
    return p;
  };

  it('pushes a good file and prints the release; --json prints it as JSON', async () => {
    const good = denseModel({ sizes: [4, 3], seed: 9 });
    const r = await run('--model', 'digits', file('good.onnx', good.bytes), ...api);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^release 1 of digits: fp32, ${good.bytes.byteLength} bytes, sha256 ${good.sha256}\\n$`));
    const j = await run('--model', 'digits', file('q.onnx', denseModel({ sizes: [4, 8, 3], seed: 2 }).bytes), '--quantize', 'int8', '--metrics', '{"accuracy":0.9}', '--json', ...api);
    expect(j.code, j.stderr).toBe(0);
    expect(JSON.parse(j.stdout)).toMatchObject({ seq: 2, model: 'digits', quantization: 'int8', problems: [] });
    expect(h.registry.db.select().from(releases).all()).toHaveLength(2);
  });

  it('exits 2 with a message on bad input, local or refused by the cloud', async () => {
    const good = file('good.onnx', denseModel({ sizes: [4, 3] }).bytes);
    const cases: [string[], RegExp][] = [
      [['--model', 'digits', join(h.dir, 'missing.onnx'), ...api], /missing\.onnx: cannot read \(ENOENT\)/],
      [['--model', 'digits', file('empty.onnx', new Uint8Array(0)), ...api], /the file is empty/],
      [['--model', 'digits', good, '--quantize', 'int4', ...api], /--quantize: expected int8/],
      [['--model', 'digits', good, '--metrics', '{"a":"x"}', ...api], /--metrics: expected a JSON object of numbers/],
      [['--model', 'digits', good, '--output', 'softmax', ...api], /--output: expected logits or probs/],
      [['--model', 'digits', good, '--output', 'probs', ...api], /HTTP 422 .*wrong_output_kind/],
      [['--model', 'digits', good, '--cloud', 'http://cloud.test'], /--token is required/],
      [['--model', 'digits', file('junk.onnx', garbageModel(300).bytes), ...api], /HTTP 422 .*not_onnx: not a loadable ONNX model/],
      [['--model', 'digits', file('wide.onnx', denseModel({ sizes: [4, 7] }).bytes), ...api], /HTTP 422 .*wrong_output_size: the model outputs 7 values per example, the model has 3 labels/],
      [['--model', 'nope', good, ...api], /HTTP 404 .*unknown_model: model nope not found/],
    ];
    for (const [argv, message] of cases) {
      const r = await run(...argv);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.stderr, argv.join(' ')).toMatch(message);
    }
    expect(h.registry.db.select().from(releases).all()).toEqual([]);
  });

  it('streams the file over a real HTTP socket (chunked, no Content-Length) and the cloud stores it intact', async () => {
    const server = await startCloudServer({ app: h.app, port: 0 });
    try {
      const good = denseModel({ sizes: [4, 3], seed: 11 });
      const r = await runWith(undefined, '--model', 'digits', file('real.onnx', good.bytes), '--cloud', server.url, '--token', TOKEN, '--json');
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ sha256: good.sha256, bytes: good.bytes.byteLength });
      const junk = await runWith(undefined, '--model', 'digits', file('junk.onnx', garbageModel(3000).bytes), '--cloud', server.url, '--token', TOKEN);
      expect(junk.code).toBe(2);
      expect(junk.stderr).toMatch(/HTTP 422 .*not_onnx/);
    } finally {
      await server.stop();
    }
  });

  it('over a real socket, a file over api.maxUploadBytes is refused 413 while streaming, exit 2', async () => {
    const small = harness({ limits: { maxUploadBytes: 2048 } });
    seedModel(small);
    const server = await startCloudServer({ app: small.app, port: 0 });
    try {
      const r = await runWith(undefined, '--model', 'digits', file('big.onnx', garbageModel(200_000).bytes), '--cloud', server.url, '--token', TOKEN);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/HTTP 413 .*payload_too_large: the ONNX file exceeds api.maxUploadBytes \(2048 bytes\)/);
      expect(small.registry.db.select().from(releases).all()).toEqual([]);
    } finally {
      await server.stop();
      small.close();
    }
  });

  it('has --help', async () => {
    const r = await run('--help');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('--quantize <form>');
    expect(r.stdout).toContain('apprentice release push --cloud');
  });
});
