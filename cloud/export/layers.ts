import type * as tf from '@tensorflow/tfjs';
import { OnnxExportError } from './errors.js';

/**
 * Step 1 of the export: turn the tfjs layer chain into a small intermediate list of ops (`IrOp`).
 * Keeping tfjs parsing apart from ONNX emission lets us fold BatchNormalization into the preceding
 * Dense/Conv2D and drop Dropout on plain arrays before any proto is built.
 * Shapes here are tfjs shapes without the batch dimension (channels-last).
 */
export type Activation = 'relu' | 'relu6' | 'sigmoid' | 'tanh' | 'softmax';

interface Base {
  /** tfjs layer that produced the op, for names in the graph and in errors. */
  layer: string;
  inShape: number[];
  outShape: number[];
}
export type IrOp = Base &
  (
    | { kind: 'dense'; w: Float32Array; b: Float32Array; inDim: number; outDim: number }
    /**
     * `w` in tfjs HWIO layout [kh, kw, cin, cout]; `cin` counts input channels per group. A depthwise
     * conv is `group` = channels with cin 1: tfjs's depthwise kernel [kh, kw, C, mult] has the same
     * memory order as HWIO [kh, kw, 1, C·mult], and ONNX's grouped output channel c·mult + m is tfjs's.
     */
    | { kind: 'conv'; w: Float32Array; b: Float32Array; kernel: [number, number]; cin: number; cout: number; group: number; strides: [number, number]; padding: 'valid' | 'same' }
    | { kind: 'pool'; type: 'max' | 'avg'; pool: [number, number]; strides: [number, number]; padding: 'valid' | 'same' }
    /** `axis` (softmax only) counts the batch dimension, as in tfjs/ONNX. */
    | { kind: 'act'; act: Activation; axis: number }
    | { kind: 'clip'; min: number; max: number }
    /** y = x * scale + shift along the last (channel) axis: an unfolded BatchNormalization. */
    | { kind: 'scaleShift'; scale: Float32Array; shift: Float32Array }
    | { kind: 'flatten' }
    | { kind: 'reshape'; target: number[] }
  );

/** Structural view of the tfjs internals we walk (Node is not exported by tfjs). */
interface TfNode {
  inputTensors: tf.SymbolicTensor[];
  inputShapes: tf.Shape | tf.Shape[];
  outputShapes: tf.Shape | tf.Shape[];
}
type TfLayer = tf.layers.Layer & { inboundNodes: TfNode[] };
type Config = Record<string, unknown>;

const INFERENCE_IDENTITY = new Set(['Dropout', 'SpatialDropout1D', 'GaussianNoise', 'GaussianDropout', 'AlphaDropout']);
const ACTIVATIONS = new Set<string>(['linear', 'relu', 'relu6', 'sigmoid', 'tanh', 'softmax']);

interface ChainEntry {
  layer: TfLayer;
  inShape: number[];
  outShape: number[];
}

function oneShape(s: tf.Shape | tf.Shape[], layer: TfLayer): number[] {
  // A single-input node stores one Shape; multi-input nodes store Shape[] (rejected by the caller).
  const shape = (Array.isArray(s[0]) ? (s as tf.Shape[])[0] : s) as tf.Shape;
  const rest = shape.slice(1);
  if (rest.some((d) => d === null || d === undefined)) {
    throw new OnnxExportError(`only the batch dimension may be unknown, got shape [${shape.join(', ')}]`, describe(layer));
  }
  return rest as number[];
}

export function describe(layer: tf.layers.Layer): { name: string; className: string } {
  return { name: layer.name, className: layer.getClassName() };
}

/**
 * Walks back from the single output to the single input through each layer's inbound node *in this
 * model* (tensor.nodeIndex), so layers reused elsewhere don't confuse us. Every step must have exactly
 * one input tensor; anything else (Add, Concatenate, multi-input models) is not a chain.
 */
export function layerChain(model: tf.LayersModel): ChainEntry[] {
  // An empty tf.sequential() has no inputs/outputs until its first layer is added.
  if (!model.inputs?.length || !model.outputs?.length) throw new OnnxExportError('model has no layers (no inputs or outputs; empty Sequential?)');
  if (model.inputs.length !== 1 || model.outputs.length !== 1) {
    throw new OnnxExportError(`only single-input single-output models are supported, got ${model.inputs.length} inputs and ${model.outputs.length} outputs`);
  }
  const chain: ChainEntry[] = [];
  let t = model.outputs[0] as tf.SymbolicTensor;
  const input = model.inputs[0] as tf.SymbolicTensor;
  for (let guard = 0; t !== input; guard++) {
    const layer = t.sourceLayer as TfLayer;
    if (guard > 10_000) throw new OnnxExportError('layer graph does not reach the model input');
    if (layer.getClassName() === 'InputLayer') throw new OnnxExportError('output is not connected to the model input by a chain of layers', describe(layer));
    const node = layer.inboundNodes[t.nodeIndex];
    if (!node || node.inputTensors.length !== 1) {
      throw new OnnxExportError(`not a linear chain: layer has ${node?.inputTensors.length ?? 0} inputs (only single-input chains are exportable)`, describe(layer));
    }
    chain.push({ layer, inShape: oneShape(node.inputShapes, layer), outShape: oneShape(node.outputShapes, layer) });
    t = node.inputTensors[0] as tf.SymbolicTensor;
  }
  return chain.reverse();
}

function weightsByRole(layer: TfLayer): Map<string, Float32Array> {
  const values = layer.getWeights();
  const out = new Map<string, Float32Array>();
  layer.weights.forEach((w, i) => {
    const role = w.originalName.split('/').pop() ?? w.originalName;
    const v = values[i];
    if (!v) return;
    if (v.dtype !== 'float32') throw new OnnxExportError(`weight ${role} has dtype ${v.dtype}, expected float32`, describe(layer));
    out.set(role, v.dataSync() as Float32Array);
  });
  return out;
}

function need(m: Map<string, Float32Array>, role: string, layer: TfLayer): Float32Array {
  const v = m.get(role);
  if (!v) throw new OnnxExportError(`missing weight "${role}"`, describe(layer));
  return v;
}

function pair(v: unknown, layer: TfLayer, what: string): [number, number] {
  const arr = Array.isArray(v) ? v : [v, v];
  if (arr.length !== 2 || !arr.every((x) => Number.isInteger(x) && (x as number) > 0)) {
    throw new OnnxExportError(`unsupported ${what} ${JSON.stringify(v)}`, describe(layer));
  }
  return [arr[0] as number, arr[1] as number];
}

function activationOp(name: unknown, e: ChainEntry): IrOp[] {
  const act = String(name ?? 'linear');
  if (!ACTIVATIONS.has(act)) {
    throw new OnnxExportError(`unsupported activation "${act}" (supported: ${[...ACTIVATIONS].join(', ')})`, describe(e.layer));
  }
  if (act === 'linear') return [];
  const shape = { layer: e.layer.name, inShape: e.outShape, outShape: e.outShape };
  return [{ ...shape, kind: 'act', act: act as Activation, axis: e.outShape.length }];
}

function checkChannelsLast(cfg: Config, layer: TfLayer): void {
  if (cfg.dataFormat !== undefined && cfg.dataFormat !== 'channelsLast') {
    throw new OnnxExportError(`dataFormat "${String(cfg.dataFormat)}" is not supported (channelsLast only)`, describe(layer));
  }
}

/** What every conv layer we export needs: channels-last, no dilation, a rank-4 NHWC input. */
function checkConvInput(cfg: Config, layer: TfLayer, inShape: number[]): void {
  checkChannelsLast(cfg, layer);
  const dil = pair(cfg.dilationRate ?? 1, layer, 'dilationRate');
  if (dil[0] !== 1 || dil[1] !== 1) throw new OnnxExportError(`dilationRate ${JSON.stringify(cfg.dilationRate)} is not supported`, describe(layer));
  if (inShape.length !== 3) throw new OnnxExportError(`expected a rank-4 NHWC input, got [N, ${inShape.join(', ')}]`, describe(layer));
}

function padding(cfg: Config, layer: TfLayer): 'valid' | 'same' {
  if (cfg.padding === 'valid' || cfg.padding === 'same') return cfg.padding;
  throw new OnnxExportError(`padding "${String(cfg.padding)}" is not supported (valid/same only)`, describe(layer));
}

/** Converts one tfjs layer into zero or more IR ops; throws OnnxExportError for anything else. */
export function convertLayer(e: ChainEntry): IrOp[] {
  const { layer, inShape, outShape } = e;
  const cls = layer.getClassName();
  const cfg = layer.getConfig() as Config;
  const base = { layer: layer.name, inShape, outShape };
  if (INFERENCE_IDENTITY.has(cls)) return [];
  switch (cls) {
    case 'Dense': {
      const w = weightsByRole(layer);
      const inDim = inShape[inShape.length - 1] as number;
      const outDim = outShape[outShape.length - 1] as number;
      const b = cfg.useBias === false ? new Float32Array(outDim) : need(w, 'bias', layer);
      return [{ ...base, kind: 'dense', w: need(w, 'kernel', layer), b, inDim, outDim }, ...activationOp(cfg.activation, e)];
    }
    case 'Conv2D': {
      checkConvInput(cfg, layer, inShape);
      const w = weightsByRole(layer);
      const cout = outShape[2] as number;
      const b = cfg.useBias === false ? new Float32Array(cout) : need(w, 'bias', layer);
      const conv: IrOp = {
        ...base, kind: 'conv', w: need(w, 'kernel', layer), b, kernel: pair(cfg.kernelSize, layer, 'kernelSize'),
        cin: inShape[2] as number, cout, group: 1, strides: pair(cfg.strides ?? 1, layer, 'strides'), padding: padding(cfg, layer),
      };
      return [conv, ...activationOp(cfg.activation, e)];
    }
    case 'DepthwiseConv2D':
    case 'SeparableConv2D':
      return depthwiseOps(e, cfg, cls === 'SeparableConv2D');
    case 'MaxPooling2D':
    case 'AveragePooling2D': {
      checkChannelsLast(cfg, layer);
      const pool = pair(cfg.poolSize, layer, 'poolSize');
      return [{ ...base, kind: 'pool', type: cls === 'MaxPooling2D' ? 'max' : 'avg', pool, strides: pair(cfg.strides ?? pool, layer, 'strides'), padding: padding(cfg, layer) }];
    }
    case 'Activation':
      return activationOp(cfg.activation, e);
    case 'ReLU': {
      // tfjs ReLU has only maxValue (no threshold/negativeSlope); a cap becomes Clip.
      const max = cfg.maxValue;
      if (max === undefined || max === null) return [{ ...base, kind: 'act', act: 'relu', axis: outShape.length }];
      if (typeof max !== 'number') throw new OnnxExportError(`unsupported maxValue ${String(max)}`, describe(layer));
      return [{ ...base, kind: 'clip', min: 0, max }];
    }
    case 'Softmax': {
      const rank = inShape.length + 1;
      const axis = typeof cfg.axis === 'number' ? cfg.axis : -1;
      const norm = axis < 0 ? axis + rank : axis;
      if (norm < 1 || norm >= rank) throw new OnnxExportError(`softmax axis ${axis} is not a feature axis`, describe(layer));
      return [{ ...base, kind: 'act', act: 'softmax', axis: norm }];
    }
    case 'Flatten':
      return [{ ...base, kind: 'flatten' }];
    case 'Reshape':
      return [{ ...base, kind: 'reshape', target: [...outShape] }];
    case 'BatchNormalization':
      return [batchNorm(e, cfg)];
    default:
      throw new OnnxExportError(`layer class ${cls} is not supported by the ONNX exporter`, describe(layer));
  }
}

/**
 * DepthwiseConv2D → one grouped Conv (bias and activation on it). SeparableConv2D (depthwise, then a
 * 1×1 pointwise conv, then bias and activation, as tfjs computes it) → grouped Conv without bias,
 * then a 1×1 Conv with the bias.
 */
function depthwiseOps(e: ChainEntry, cfg: Config, separable: boolean): IrOp[] {
  const { layer, inShape, outShape } = e;
  checkConvInput(cfg, layer, inShape);
  const w = weightsByRole(layer);
  const channels = inShape[2] as number;
  const mult = typeof cfg.depthMultiplier === 'number' ? cfg.depthMultiplier : 1;
  const dwOut = channels * mult;
  const cout = outShape[2] as number;
  const bias = cfg.useBias === false ? new Float32Array(cout) : need(w, 'bias', layer);
  const strides = pair(cfg.strides ?? 1, layer, 'strides');
  const dwShape = [outShape[0] as number, outShape[1] as number, dwOut];
  const dw: IrOp = {
    layer: separable ? `${layer.name}_depthwise` : layer.name, inShape, outShape: separable ? dwShape : outShape, kind: 'conv',
    w: need(w, 'depthwise_kernel', layer), b: separable ? new Float32Array(dwOut) : bias, kernel: pair(cfg.kernelSize, layer, 'kernelSize'),
    cin: 1, cout: dwOut, group: channels, strides, padding: padding(cfg, layer),
  };
  if (!separable) return [dw, ...activationOp(cfg.activation, e)];
  const pw: IrOp = {
    layer: `${layer.name}_pointwise`, inShape: dwShape, outShape, kind: 'conv', w: need(w, 'pointwise_kernel', layer), b: bias,
    kernel: [1, 1], cin: dwOut, cout, group: 1, strides: [1, 1], padding: 'valid',
  };
  return [dw, pw, ...activationOp(cfg.activation, e)];
}

/** Inference-time BN as a per-channel affine map, computed in float64 to keep folding exact. */
function batchNorm(e: ChainEntry, cfg: Config): IrOp {
  const { layer, inShape } = e;
  const rank = inShape.length + 1;
  const axis = typeof cfg.axis === 'number' ? cfg.axis : -1;
  if (axis !== -1 && axis !== rank - 1) {
    throw new OnnxExportError(`BatchNormalization over axis ${axis} is not supported (last axis only)`, describe(layer));
  }
  const w = weightsByRole(layer);
  const mean = need(w, 'moving_mean', layer);
  const variance = need(w, 'moving_variance', layer);
  const c = mean.length;
  const gamma = cfg.scale === false ? undefined : need(w, 'gamma', layer);
  const beta = cfg.center === false ? undefined : need(w, 'beta', layer);
  const eps = typeof cfg.epsilon === 'number' ? cfg.epsilon : 1e-3;
  const scale = new Float32Array(c);
  const shift = new Float32Array(c);
  for (let i = 0; i < c; i++) {
    const s = (gamma ? (gamma[i] as number) : 1) / Math.sqrt((variance[i] as number) + eps);
    scale[i] = s;
    shift[i] = (beta ? (beta[i] as number) : 0) - (mean[i] as number) * s;
  }
  return { layer: layer.name, inShape, outShape: e.outShape, kind: 'scaleShift', scale, shift };
}

/**
 * Folds a scaleShift directly after a Dense/Conv (with no activation in between: tfjs applies the
 * layer activation before BN, so `Dense(relu) → BN` is correctly left unfolded) into its weights:
 * W' = W·s per output channel, b' = b·s + t. Output channel is the last axis of both kernels.
 */
export function foldBatchNorm(ops: IrOp[]): IrOp[] {
  const out: IrOp[] = [];
  for (const op of ops) {
    const prev = out[out.length - 1];
    if (op.kind === 'scaleShift' && prev && (prev.kind === 'dense' || prev.kind === 'conv')) {
      const cout = prev.kind === 'dense' ? prev.outDim : prev.cout;
      const w = new Float32Array(prev.w.length);
      for (let i = 0; i < w.length; i++) w[i] = (prev.w[i] as number) * (op.scale[i % cout] as number);
      const b = new Float32Array(cout);
      for (let j = 0; j < cout; j++) b[j] = (prev.b[j] as number) * (op.scale[j] as number) + (op.shift[j] as number);
      out[out.length - 1] = { ...prev, w, b, layer: `${prev.layer}+${op.layer}`, outShape: op.outShape };
      continue;
    }
    out.push(op);
  }
  return out;
}

export function modelToIr(model: tf.LayersModel): IrOp[] {
  return foldBatchNorm(layerChain(model).flatMap(convertLayer));
}
