import { eq } from 'drizzle-orm';
import * as ort from 'onnxruntime-node';
import { mulberry32 } from '../../shared/util/random.js';
import type { InputSpec } from '../../shared/protocol/schemas.js';
import { quantizeInt8 } from '../export/index.js';
import type { StoreRegistry } from '../registry/open.js';
import { buildReleaseManifest } from './manifest.js';
import { allocateReleaseSeq, currentRelease, insertRelease } from './releases.js';
import { parseRoundModel, selfTestTolerance } from './settings.js';
import { storeArtifact } from './store.js';
import type { ArtifactBlobs } from '../artifacts/types.js';
import type { ManifestSigner } from './types.js';

/** Why an uploaded model was refused; the API answers `status` with `code` and the message. */
export type UploadProblem = 'unknown_model' | 'not_onnx' | 'wrong_input_shape' | 'wrong_output_size' | 'wrong_output_kind' | 'quantize_failed';

/** What the model's output means: raw logits (the device applies softmax) or probabilities already. */
export type OutputKind = 'logits' | 'probs';

export class UploadRejectedError extends Error {
  override readonly name = 'UploadRejectedError';
  constructor(
    readonly code: UploadProblem,
    message: string,
    readonly status: 404 | 422 = code === 'unknown_model' ? 404 : 422,
  ) {
    super(message);
  }
}

export interface UploadReleaseInput {
  registry: StoreRegistry;
  /** Artifacts are stored under `${dataDir}/artifacts` (cloud/rounds/store.ts), or in `blobs` when it is the registry's store. */
  dataDir: string;
  blobs?: ArtifactBlobs;
  signer: ManifestSigner;
  model: string;
  /** The uploaded ONNX bytes (already read from the temp file the body was streamed to). */
  onnx: Uint8Array;
  quantize?: 'int8';
  /**
   * The model's output kind; undefined = detected from its outputs on the probe inputs: every row
   * non-negative and summing to 1 means `probs` (a final Softmax), anything else `logits`.
   */
  output?: OutputKind;
  /** The uploader's own numbers (e.g. accuracy on their test set); recorded in the manifest's metrics. */
  metrics?: Record<string, number>;
  publicBaseUrl?: string;
  now?: Date;
}

export interface UploadedRelease {
  seq: number;
  sha256: string;
  bytes: number;
  quantization: 'int8' | 'fp32';
  output: OutputKind;
}

/** Probe inputs per check: the first is the self-test's, the others make the output-kind detection robust. */
const PROBES = 4;

/** True when every row is a probability vector (non-negative, summing to 1 within float error). */
export function looksLikeProbs(rows: Float32Array[]): boolean {
  return rows.every((r) => r.every((v) => v >= 0 && v <= 1) && Math.abs(r.reduce((a, b) => a + b, 0) - 1) < 1e-3);
}

/**
 * Runs `onnx` at batch 1, as a device would (`[1, ...inputSpec.shape]`, edge/runtime/session.ts), on PROBES
 * deterministic inputs drawn from the model's scaling range. The first output is the self-test's golden value.
 * ORT's own message is kept in the error: it names the mismatching dimension.
 */
async function probe(onnx: Uint8Array, spec: InputSpec, classes: number): Promise<{ input: Float32Array; outputs: Float32Array[] }> {
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(onnx, { interOpNumThreads: 1, executionMode: 'sequential' });
  } catch (err) {
    throw new UploadRejectedError('not_onnx', `not a loadable ONNX model: ${firstLine(err)}`);
  }
  try {
    if (session.inputNames.length !== 1) throw new UploadRejectedError('wrong_input_shape', `the model must have exactly one input, it has ${session.inputNames.length} (${session.inputNames.join(', ')})`);
    const size = spec.shape.reduce((a, b) => a * b, 1);
    const rnd = mulberry32(0x5e1f7e57);
    const [lo, hi] = scalingRange(spec);
    const inputs = Array.from({ length: PROBES }, () => Float32Array.from({ length: size }, () => lo + rnd() * (hi - lo)));
    const outputs: Float32Array[] = [];
    for (const input of inputs) {
      let result: ort.InferenceSession.OnnxValueMapType;
      try {
        result = await session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', input, [1, ...spec.shape]) });
      } catch (err) {
        throw new UploadRejectedError('wrong_input_shape', `the model does not accept input [1, ${spec.shape.join(', ')}] float32 (the model's inputSpec): ${firstLine(err)}`);
      }
      const out = result[session.outputNames[0]!];
      const data = out?.data;
      if (!(data instanceof Float32Array)) throw new UploadRejectedError('wrong_output_size', `the model's first output must be float32, it is ${out?.type ?? 'missing'}`);
      if (data.length !== classes) throw new UploadRejectedError('wrong_output_size', `the model outputs ${data.length} values per example, the model has ${classes} labels`);
      if (!data.every(Number.isFinite)) throw new UploadRejectedError('wrong_output_size', 'the model outputs non-finite values (NaN/Inf) on a sample input');
      outputs.push(Float32Array.from(data));
    }
    return { input: inputs[0]!, outputs };
  } finally {
    await session.release();
  }
}

/** The range a device's scaled inputs fall in (raw 0..255 for uint8, else 0..1, times scale plus offset), so the self-test input looks like real data. */
function scalingRange(spec: InputSpec): [number, number] {
  const top = spec.raw === 'uint8' ? 255 : 1;
  const a = spec.scaling.offset;
  const b = top * spec.scaling.scale + spec.scaling.offset;
  return a <= b ? [a, b] : [b, a];
}

function firstLine(err: unknown): string {
  return String((err as Error)?.message ?? err).split('\n')[0]!.slice(0, 300);
}

/**
 * "Bring your own model": checks an uploaded ONNX file against the model's inputSpec and label count,
 * optionally quantizes it, computes the self-test from its own output, then signs, stores and registers it
 * exactly like a distilled release (cloud/rounds/round.ts steps 6–7), with `lineage.source = "uploaded"`.
 * Every check runs before anything is written, so a refused file leaves no row and no artifact; the
 * sequence is allocated only after the checks (a failure after that leaves a harmless gap).
 */
export async function releaseUploadedModel(i: UploadReleaseInput): Promise<UploadedRelease> {
  const { models } = i.registry.t;
  const [row] = await i.registry.q.select().from(models).where(eq(models.name, i.model)).limit(1);
  if (!row) throw new UploadRejectedError('unknown_model', `model ${i.model} not found`);
  const model = parseRoundModel(row);
  const classes = model.labels.length;
  // The fp32 upload is checked first, so a bad file is named as such and not as a quantizer failure.
  const first = await probe(i.onnx, model.inputSpec, classes);
  const probs = looksLikeProbs(first.outputs);
  // A device applies softmax to logits: declaring probabilities that are not would skew every confidence.
  if (i.output === 'probs' && !probs) throw new UploadRejectedError('wrong_output_kind', 'output=probs, but the model\'s outputs on the probe inputs are not probability vectors (non-negative, summing to 1); upload with output=logits');
  const output: OutputKind = i.output ?? (probs ? 'probs' : 'logits');
  let artifact = i.onnx;
  if (i.quantize === 'int8') {
    try {
      artifact = quantizeInt8(i.onnx);
    } catch (err) {
      throw new UploadRejectedError('quantize_failed', `cannot quantize this model to int8: ${firstLine(err)}`);
    }
  }
  const quantization = i.quantize ?? 'fp32';
  // The device runs the shipped bytes at batch 1: the golden output must come from those same bytes.
  const shipped = await probe(artifact, model.inputSpec, classes);

  const parent = await currentRelease(i.registry, model.name);
  const seq = await allocateReleaseSeq(i.registry);
  const manifest = buildReleaseManifest({
    model: model.name,
    seq,
    parentSeq: parent?.seq ?? null,
    inputSpec: model.inputSpec,
    outputKind: output,
    labels: model.labels,
    teacherId: 'uploaded',
    artifact,
    quantization,
    chunkSize: model.settings.chunkSize,
    publicBaseUrl: i.publicBaseUrl,
    metrics: { ...i.metrics, bytes: artifact.byteLength, uploadedBytes: i.onnx.byteLength },
    exampleCount: 0,
    source: 'uploaded',
    createdAt: i.now ?? new Date(),
    validityDays: model.settings.validityDays,
    selfTest: { input: shipped.input, expected: shipped.outputs[0]!, tolerance: selfTestTolerance({ ...model.settings, artifact: quantization }) },
  });
  const signed = await i.signer.sign(manifest);
  // Content-addressed file first, the registry row last (a row never points at a missing file).
  const stored = await storeArtifact(i.dataDir, artifact, i.blobs);
  await insertRelease(i.registry, {
    model: model.name,
    seq,
    sha256: stored.sha256,
    bytes: artifact.byteLength,
    quantization,
    metrics: { ...i.metrics, source: 'uploaded', uploadedBytes: i.onnx.byteLength },
    manifest: signed.manifest,
    signature: signed.signature,
    parentSeq: parent?.seq ?? null,
    roundId: null,
    artifactPath: stored.relPath,
    chunksPublished: false,
  });
  return { seq, sha256: stored.sha256, bytes: artifact.byteLength, quantization, output };
}
