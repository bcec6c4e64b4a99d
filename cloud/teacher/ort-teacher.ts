import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import * as ort from 'onnxruntime-node';
import { UsageError } from '../../shared/cli/errors.js';

export type TeacherOutputKind = 'logits' | 'probs';

export class TeacherError extends UsageError {
  override readonly name = 'TeacherError';
}

interface Member {
  file: string;
  sha256: string;
  session: ort.InferenceSession;
  inputName: string;
  outputName: string;
  /** Per-example input dims (batch dimension dropped), with symbolic dims as -1. */
  inputDims: number[];
}

export interface TeacherOptions {
  /** What the models output: logits (default) or probabilities, which are turned into log-probabilities. */
  outputKind?: TeacherOutputKind;
  batchSize?: number;
  intraOpNumThreads?: number;
  /** How each file is named in errors (default: its path), e.g. `artifact:1f… (from /data/teacher.onnx)`. */
  names?: string[];
}

/**
 * The cloud teacher: one ONNX model with one input and one output, or several forming an ensemble
 * whose logits are averaged (Hinton et al.'s "cumbersome model"). Runs batched in onnxruntime-node.
 */
export class Teacher {
  private constructor(
    private readonly members: Member[],
    readonly outputKind: TeacherOutputKind,
    readonly batchSize: number,
    /** Stable id: sha256 over the member hashes and output kind. */
    readonly id: string,
  ) {}

  static async create(files: string[], { outputKind = 'logits', batchSize = 512, intraOpNumThreads, names }: TeacherOptions = {}): Promise<Teacher> {
    if (files.length === 0) throw new TeacherError('--teacher: at least one ONNX file is required');
    const members: Member[] = [];
    try {
      for (const [i, path] of files.entries()) {
        const file = names?.[i] ?? path;
        let bytes: Buffer;
        try {
          bytes = await readFile(path);
        } catch (err) {
          throw new TeacherError(`${file}: cannot read teacher model (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
        }
        if (bytes.length === 0) throw new TeacherError(`${file}: empty file, not an ONNX model`);
        let session: ort.InferenceSession;
        try {
          session = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'all', ...(intraOpNumThreads ? { intraOpNumThreads } : {}) });
        } catch (err) {
          throw new TeacherError(`${file}: not a loadable ONNX model (${(err as Error).message.split('\n')[0]})`);
        }
        if (session.inputNames.length !== 1 || session.outputNames.length !== 1) {
          await session.release();
          throw new TeacherError(`${file}: a teacher must have exactly one input and one output (has ${session.inputNames.length} and ${session.outputNames.length})`);
        }
        const meta = session.inputMetadata[0] as { isTensor?: boolean; shape?: ReadonlyArray<number | string> } | undefined;
        const shape = meta?.shape ?? [];
        const inputDims = shape.slice(1).map((d) => (typeof d === 'number' ? d : -1));
        members.push({ file, sha256: createHash('sha256').update(bytes).digest('hex'), session, inputName: session.inputNames[0]!, outputName: session.outputNames[0]!, inputDims });
      }
    } catch (err) {
      await Promise.all(members.map((m) => m.session.release()));
      throw err;
    }
    const id = createHash('sha256').update(members.map((m) => m.sha256).join(',') + ':' + outputKind).digest('hex').slice(0, 16);
    return new Teacher(members, outputKind, batchSize, id);
  }

  get files(): string[] {
    return this.members.map((m) => m.file);
  }

  get size(): number {
    return this.members.length;
  }

  private dimsFor(m: Member, exampleSize: number, n: number): number[] {
    const dims = m.inputDims.length ? m.inputDims : [exampleSize];
    const known = dims.reduce((a, d) => (d > 0 ? a * d : a), 1);
    const unknown = dims.filter((d) => d <= 0).length;
    if (unknown > 1 || (unknown === 0 && known !== exampleSize) || (unknown === 1 && exampleSize % known !== 0)) {
      throw new TeacherError(`${m.file}: model input [${m.inputDims.join(', ')}] does not fit examples of ${exampleSize} values`);
    }
    return [n, ...dims.map((d) => (d > 0 ? d : exampleSize / known))];
  }

  /**
   * Teacher logits for every example: [count × classes]. For probability outputs, log(p) is
   * returned (logits up to a constant, which softmax ignores). Ensembles average member logits.
   */
  async logits(features: Float32Array, exampleSize: number, onProgress?: (done: number, total: number) => void): Promise<{ logits: Float32Array; classes: number }> {
    const count = features.length / exampleSize;
    if (!Number.isInteger(count)) throw new TeacherError(`features length ${features.length} is not a multiple of example size ${exampleSize}`);
    let sum: Float32Array | undefined;
    let classes = 0;
    for (const m of this.members) {
      for (let s = 0; s < count; s += this.batchSize) {
        const n = Math.min(this.batchSize, count - s);
        const input = new ort.Tensor('float32', features.subarray(s * exampleSize, (s + n) * exampleSize), this.dimsFor(m, exampleSize, n));
        const out = await m.session.run({ [m.inputName]: input });
        const t = out[m.outputName]!;
        const data = t.data as Float32Array;
        const c = data.length / n;
        if (!classes) {
          classes = c;
          sum = new Float32Array(count * classes);
        } else if (c !== classes) {
          throw new TeacherError(`${m.file}: outputs ${c} classes, but the ensemble's first member outputs ${classes}`);
        }
        const dst = sum!;
        const off = s * classes;
        if (this.outputKind === 'probs') {
          for (let i = 0; i < data.length; i++) dst[off + i]! += Math.log(Math.max(data[i]!, 1e-12));
        } else {
          for (let i = 0; i < data.length; i++) dst[off + i]! += data[i]!;
        }
        t.dispose?.();
        onProgress?.(s + n + count * this.members.indexOf(m), count * this.members.length);
      }
    }
    if (!sum) return { logits: new Float32Array(0), classes: 0 };
    const k = this.members.length;
    if (k > 1) for (let i = 0; i < sum.length; i++) sum[i]! /= k;
    for (let i = 0; i < sum.length; i++) if (!Number.isFinite(sum[i]!)) throw new TeacherError(`teacher produced a non-finite output at example ${Math.floor(i / classes)}`);
    return { logits: sum, classes };
  }

  async dispose(): Promise<void> {
    await Promise.all(this.members.map((m) => m.session.release()));
  }
}
