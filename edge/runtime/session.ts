import { InferenceSession, Tensor } from 'onnxruntime-node';
import type { Manifest } from '../../shared/protocol/index.js';
import { ActivationError, InferenceError } from './errors.js';

/**
 * ORT session options the edge exposes. Defaults suit a Raspberry Pi class device serving a small model
 * from the same event loop as the HTTP API: one intra-op thread (a tiny MatMul gains nothing from a
 * thread pool and the spare core serves HTTP), sequential execution, full graph optimisation.
 */
export interface ModelSessionOptions {
  intraOpNumThreads?: number;
  interOpNumThreads?: number;
  executionMode?: 'sequential' | 'parallel';
  graphOptimizationLevel?: 'disabled' | 'basic' | 'extended' | 'layout' | 'all';
  /**
   * ORT's CPU arena keeps freed blocks for reuse. Left on by default (faster runs); turning it off is the
   * usual advice against RSS growth across session reloads (onnxruntime#25325), measured in the edge bench.
   */
  enableCpuMemArena?: boolean;
  /**
   * ORT's memory pattern: plans and pre-allocates one block per input shape it has seen. With the
   * varying batch sizes of the local API each new n adds a plan; the edge turns it off (measured in
   * `npm run bench:edge`, issue 9).
   */
  enableMemPattern?: boolean;
}

export const DEFAULT_SESSION_OPTIONS: Required<ModelSessionOptions> = {
  intraOpNumThreads: 1,
  interOpNumThreads: 1,
  executionMode: 'sequential',
  graphOptimizationLevel: 'all',
  enableCpuMemArena: true,
  enableMemPattern: true,
};

/** What `ModelHost` needs from a session; `ModelSession` is the real one, tests may inject fakes. */
export interface InferenceRunner {
  readonly inputSize: number;
  readonly classes: number;
  /** Probabilities [n × classes] (softmax applied for logits models). */
  run(batch: Float32Array, n: number): Promise<Float32Array>;
  /** The model's raw output [n × classes], in the kind of `manifest.output.kind`. */
  runRaw(batch: Float32Array, n: number): Promise<Float32Array>;
  dispose(): Promise<void>;
}

function product(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

/**
 * Numerically stable softmax over each row of `[n × classes]`, in place: subtracting the row max keeps
 * exp() from overflowing for large logits. A NaN/±Inf logit yields a NaN row, which the host reports.
 */
export function softmaxRows(values: Float32Array, n: number, classes: number): Float32Array {
  for (let r = 0; r < n; r++) {
    const base = r * classes;
    let max = -Infinity;
    for (let j = 0; j < classes; j++) {
      const v = values[base + j]!;
      if (v > max) max = v;
    }
    let sum = 0;
    for (let j = 0; j < classes; j++) {
      const e = Math.exp(values[base + j]! - max);
      values[base + j] = e;
      sum += e;
    }
    for (let j = 0; j < classes; j++) values[base + j]! /= sum;
  }
  return values;
}

/**
 * Checks the model's declared input/output against the manifest. Symbolic dimensions match anything;
 * fixed ones must agree. The model's first dimension is the batch: it must be symbolic, as we feed any n.
 */
function checkSignature(session: InferenceSession, manifest: Manifest): void {
  const [input] = session.inputMetadata;
  const [output] = session.outputMetadata;
  if (session.inputNames.length !== 1 || !input) {
    throw new ActivationError('input_mismatch', `model has ${session.inputNames.length} inputs, expected exactly 1`);
  }
  if (!input.isTensor || input.type !== 'float32') {
    throw new ActivationError('input_mismatch', `model input "${input.name}" is not a float32 tensor`);
  }
  const want = manifest.input.shape;
  const dims = input.shape;
  // An empty shape means ORT knows nothing about it; the self-test run decides then.
  if (dims.length > 0) {
    if (dims.length !== want.length + 1) {
      throw new ActivationError('input_mismatch', `model input shape [${dims.join(', ')}] does not match manifest [N, ${want.join(', ')}]`);
    }
    if (typeof dims[0] === 'number') {
      throw new ActivationError('input_mismatch', `model input has a fixed batch dimension ${dims[0]}; a symbolic one is required (requests are batched)`);
    }
    dims.slice(1).forEach((d, i) => {
      if (typeof d === 'number' && d !== want[i]) {
        throw new ActivationError('input_mismatch', `model input shape [${dims.join(', ')}] does not match manifest [N, ${want.join(', ')}]`);
      }
    });
  }
  if (!output || !output.isTensor || output.type !== 'float32') {
    throw new ActivationError('load_failed', 'model has no float32 tensor output');
  }
  const last = output.shape[output.shape.length - 1];
  if (typeof last === 'number' && last !== manifest.output.classes) {
    throw new ActivationError('load_failed', `model outputs ${last} classes, manifest says ${manifest.output.classes}`);
  }
}

/**
 * One ORT InferenceSession bound to the manifest it was loaded for. Created with `create()`, freed with
 * `dispose()` (a native resource: the GC does not free ORT's memory in time, see onnxruntime#25325).
 */
export class ModelSession implements InferenceRunner {
  readonly inputSize: number;
  readonly classes: number;
  private readonly inputName: string;
  private readonly outputName: string;
  private readonly dims: readonly number[];
  private readonly logits: boolean;
  private released: Promise<void> | undefined;

  private constructor(
    private readonly session: InferenceSession,
    readonly manifest: Manifest,
  ) {
    this.inputName = session.inputNames[0]!;
    this.outputName = session.outputNames[0]!;
    this.dims = manifest.input.shape;
    this.inputSize = product(manifest.input.shape);
    this.classes = manifest.output.classes;
    this.logits = manifest.output.kind === 'logits';
  }

  /**
   * Loads `path` into a new session. Throws `ActivationError` ('load_failed' when ORT refuses the file,
   * 'input_mismatch' when the model's signature disagrees with the manifest).
   *
   * @example
   * const s = await ModelSession.create('/var/lib/apprentice/slots/ab12….onnx', manifest, { intraOpNumThreads: 1 });
   * const probs = await s.run(batch, n);
   * await s.dispose();
   */
  static async create(path: string, manifest: Manifest, options: ModelSessionOptions = {}): Promise<ModelSession> {
    const o = { ...DEFAULT_SESSION_OPTIONS, ...options };
    let session: InferenceSession;
    try {
      session = await InferenceSession.create(path, {
        executionProviders: ['cpu'],
        intraOpNumThreads: o.intraOpNumThreads,
        interOpNumThreads: o.interOpNumThreads,
        executionMode: o.executionMode,
        graphOptimizationLevel: o.graphOptimizationLevel,
        enableCpuMemArena: o.enableCpuMemArena,
        enableMemPattern: o.enableMemPattern,
        logSeverityLevel: 3,
      });
    } catch (err) {
      throw new ActivationError('load_failed', `onnxruntime could not load ${path}: ${(err as Error).message}`, { cause: err });
    }
    try {
      checkSignature(session, manifest);
    } catch (err) {
      await session.release();
      throw err;
    }
    return new ModelSession(session, manifest);
  }

  async runRaw(batch: Float32Array, n: number): Promise<Float32Array> {
    if (this.released) throw new InferenceError('inference_failed', 'session already disposed');
    if (!Number.isInteger(n) || n < 1 || batch.length !== n * this.inputSize) {
      throw new InferenceError('input_size', `batch holds ${batch.length} values, expected ${n} × ${this.inputSize}`);
    }
    let data: Float32Array;
    try {
      // The Tensor wraps `batch` without copying; ORT reads it during the (synchronous, native) run.
      const feeds = { [this.inputName]: new Tensor('float32', batch, [n, ...this.dims]) };
      const out = await this.session.run(feeds, [this.outputName]);
      data = out[this.outputName]!.data as Float32Array;
    } catch (err) {
      throw new InferenceError('inference_failed', `onnxruntime run failed: ${(err as Error).message}`, { cause: err });
    }
    if (data.length !== n * this.classes) {
      throw new InferenceError('inference_failed', `model produced ${data.length} values, expected ${n} × ${this.classes}`);
    }
    return data;
  }

  async run(batch: Float32Array, n: number): Promise<Float32Array> {
    const raw = await this.runRaw(batch, n);
    // The output buffer is freshly allocated by the binding for every run, so softmax can work in place.
    return this.logits ? softmaxRows(raw, n, this.classes) : raw;
  }

  /** Releases the native session; idempotent. */
  dispose(): Promise<void> {
    this.released ??= this.session.release();
    return this.released;
  }
}
