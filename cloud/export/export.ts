import type * as tf from '@tensorflow/tfjs';
import { emitGraph, type DenseForm } from './emit.js';
import { OnnxExportError } from './errors.js';
import { modelToIr } from './layers.js';
import { DataType, GraphBuilder, encodeModel, irVersionForOpset, valueInfo } from './onnx-builder.js';

export interface ExportOptions {
  /** Default-domain opset. Default 13 (the first with Softmax over one axis and per-axis DequantizeLinear). */
  opset?: number;
  inputName?: string;
  outputName?: string;
  producerName?: string;
  docString?: string;
  /** Stored as ModelProto.metadata_props (e.g. model id, round, teacher hash). */
  metadata?: Record<string, string>;
  /** @internal Dense lowering, exposed for the bench only. */
  denseForm?: DenseForm;
}

export const DEFAULT_OPSET = 13;
/** Highest opset we have checked our op semantics against (DequantizeLinear/Reshape defaults unchanged). */
export const MAX_OPSET = 21;
export const BATCH_DIM = 'N';

/**
 * Exports a tfjs LayersModel (Sequential, or a functional single-input single-output chain) to ONNX
 * bytes with a dynamic batch dimension and NHWC input/output exactly like `model.predict`.
 * Throws OnnxExportError for anything it cannot express faithfully.
 */
export function exportToOnnx(model: tf.LayersModel, opts: ExportOptions = {}): Uint8Array {
  const opset = opts.opset ?? DEFAULT_OPSET;
  if (!Number.isInteger(opset) || opset < DEFAULT_OPSET || opset > MAX_OPSET) {
    throw new OnnxExportError(`opset must be an integer in [${DEFAULT_OPSET}, ${MAX_OPSET}], got ${opset}`);
  }
  const inputName = opts.inputName ?? 'input';
  const outputName = opts.outputName ?? 'logits';
  if (!inputName || !outputName || inputName === outputName) {
    throw new OnnxExportError(`input and output names must be distinct and non-empty, got "${inputName}" and "${outputName}"`);
  }

  const ops = modelToIr(model);
  const inShape = (model.inputs[0] as tf.SymbolicTensor).shape;
  const outShape = (model.outputs[0] as tf.SymbolicTensor).shape;
  if ((model.inputs[0] as tf.SymbolicTensor).dtype !== 'float32') {
    throw new OnnxExportError(`model input dtype ${(model.inputs[0] as tf.SymbolicTensor).dtype} is not supported (float32 only)`);
  }

  const g = new GraphBuilder([inputName, outputName]);
  const last = emitGraph(g, ops, inputName, inShape.length, opts.denseForm ?? 'gemm');
  if (last === inputName) {
    // Nothing to compute (e.g. a model of only Dropout): ONNX still needs a node producing the output.
    g.nodes.push({ opType: 'Identity', name: g.unique('identity'), input: [inputName], output: [outputName] });
  } else {
    // The final tensor was produced by the last node; rename it to the public output name.
    const producer = g.nodes[g.nodes.length - 1];
    if (!producer?.output || producer.output[0] !== last) throw new Error('internal: last tensor is not produced by the last node');
    producer.output[0] = outputName;
  }

  const dims = (shape: readonly (number | null)[]): (number | string)[] => shape.map((d, i) => (i === 0 || d === null ? BATCH_DIM : d));
  return encodeModel({
    irVersion: irVersionForOpset(opset),
    opsetImport: [{ domain: '', version: opset }],
    producerName: opts.producerName ?? 'apprentice',
    producerVersion: '0.1.0',
    docString: opts.docString ?? '',
    metadataProps: Object.entries(opts.metadata ?? {}).map(([key, value]) => ({ key, value })),
    graph: {
      name: model.name || 'student',
      node: g.nodes,
      initializer: g.initializers,
      input: [valueInfo(inputName, DataType.FLOAT, dims(inShape))],
      output: [valueInfo(outputName, DataType.FLOAT, dims(outShape))],
    },
  });
}
