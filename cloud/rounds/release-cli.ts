import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { Command } from 'commander';
import { z } from 'zod';
import { ApiClient, addApiOptions, resolveAdminToken } from '../../shared/cli/api-client.js';
import { UsageError, parsePositiveInt } from '../../shared/cli/errors.js';

/** What the CLI reads of the upload's answer (loose: a newer cloud may add fields). */
const uploadedSchema = z.object({
  seq: z.number().int(),
  model: z.string(),
  sha256: z.string(),
  bytes: z.number().int(),
  quantization: z.string(),
  problems: z.array(z.string()).default([]),
});

export interface ReleaseCliOptions {
  /** Tests: answer through the app in-process. */
  fetchImpl?: typeof fetch;
  env?: NodeJS.ProcessEnv;
}

/** `apprentice release push`: a model trained elsewhere becomes a signed release (POST /v1/models/{name}/releases). */
export function releaseCommand(o: ReleaseCliOptions = {}): Command {
  const cmd = new Command('release').description('Releases of a model: push an ONNX file trained elsewhere as a new signed release (admin API)');
  cmd.addCommand(
    addApiOptions(new Command('push'))
      .description('Upload FILE.onnx as a new release of --model: the cloud checks it against the model (input shape, label count), computes its self-test, signs and publishes it')
      .argument('<file>', 'the ONNX model file')
      .requiredOption('--model <name>', 'model name (must exist in the cloud)')
      .option('--quantize <form>', 'quantize in the cloud before release: int8')
      .option('--output <kind>', 'what the model outputs: logits or probs (default: detected; a final Softmax means probs)')
      .option('--metrics <json>', 'your own figures for the manifest, a JSON object of numbers, e.g. {"accuracy":0.93}')
      .option('--timeout <seconds>', 'give up after this long (large files on slow links)', (v) => parsePositiveInt('--timeout', v), 600)
      .option('--json', 'print the release as JSON', false)
      .addHelpText('after', '\nExample:\n  apprentice release push --cloud http://127.0.0.1:8787 --token-file DATA/admin-token --model digits my-model.onnx --quantize int8')
      .action(async (file: string, f) => {
        if (f.quantize !== undefined && f.quantize !== 'int8') throw new UsageError(`--quantize: expected int8, got "${f.quantize}"`);
        if (f.output !== undefined && f.output !== 'logits' && f.output !== 'probs') throw new UsageError(`--output: expected logits or probs, got "${f.output}"`);
        if (f.metrics !== undefined) {
          let parsed: unknown;
          try {
            parsed = JSON.parse(f.metrics);
          } catch {
            throw new UsageError(`--metrics: not JSON: ${f.metrics}`);
          }
          if (!z.record(z.string(), z.number().finite()).safeParse(parsed).success) throw new UsageError('--metrics: expected a JSON object of numbers, e.g. {"accuracy":0.93}');
        }
        const st = await stat(file).catch((err: NodeJS.ErrnoException) => {
          throw new UsageError(`${file}: cannot read (${err.code ?? err.message})`);
        });
        if (!st.isFile()) throw new UsageError(`${file}: not a file`);
        if (st.size === 0) throw new UsageError(`${file}: the file is empty`);
        const api = new ApiClient({ cloud: f.cloud, token: resolveAdminToken(f, o.env), fetchImpl: o.fetchImpl, timeoutMs: f.timeout * 1000 });
        // Streamed from disk: a 256 MiB model is never held in the CLI's memory.
        const data = Readable.toWeb(createReadStream(file)) as unknown as ReadableStream<Uint8Array>;
        const r = await api.request('POST', `v1/models/${encodeURIComponent(f.model)}/releases`, {
          body: { data, contentType: 'application/octet-stream' },
          query: { quantize: f.quantize, output: f.output, metrics: f.metrics },
          schema: uploadedSchema,
        });
        process.stdout.write(f.json ? JSON.stringify(r, null, 2) + '\n' : `release ${r.seq} of ${r.model}: ${r.quantization}, ${r.bytes} bytes, sha256 ${r.sha256}\n`);
        // The release is signed and stored either way; a publish problem is the operator's to fix.
        for (const p of r.problems) process.stderr.write(`warning: ${p}\n`);
      }),
  );
  return cmd;
}
