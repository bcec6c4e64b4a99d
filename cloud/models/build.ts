import * as tf from '@tensorflow/tfjs';
import { imageShapeOf, type ArchSpec, type ImageShape } from './spec.js';

export interface BuildOptions {
  inputSize: number;
  classes: number;
  /** H×W×C for conv students; default: a flat square greyscale image of `inputSize` pixels. */
  imageShape?: ImageShape;
  /** Dropout on hidden activations (Hinton et al. used 0.5). */
  dropout?: number;
  /** Dropout on the input (Hinton et al. used 0.2 with 0.5 hidden). */
  inputDropout?: number;
  seed?: number;
}

/**
 * Builds the tfjs model for an architecture. The last layer is linear: the model outputs logits.
 * Every model takes the flat [inputSize] vector, conv students included (they start with a Reshape
 * to H×W×C), so the trainer, the exported ONNX input and the edge's request shape stay the same for
 * every student.
 */
export function buildModel(arch: ArchSpec, { inputSize, classes, imageShape, dropout = 0, inputDropout = 0, seed }: BuildOptions): tf.Sequential {
  const model = tf.sequential();
  let s = seed;
  const init = () => (s === undefined ? 'glorotUniform' : tf.initializers.glorotUniform({ seed: s++ }));
  const heInit = () => (s === undefined ? 'heNormal' : tf.initializers.heNormal({ seed: s++ }));
  model.add(tf.layers.inputLayer({ inputShape: [inputSize] }));
  if (inputDropout > 0) model.add(tf.layers.dropout({ rate: inputDropout }));
  if (arch.kind !== 'mlp') {
    const shape = imageShape ?? imageShapeOf([inputSize]);
    if (shape[0] * shape[1] * shape[2] !== inputSize) throw new Error(`image shape ${shape.join('×')} does not hold ${inputSize} values`);
    model.add(tf.layers.reshape({ targetShape: shape }));
    for (const filters of arch.filters) {
      const common = { kernelSize: 3, padding: 'same' as const, activation: 'relu' as const };
      if (arch.kind === 'cnn') model.add(tf.layers.conv2d({ ...common, filters, kernelInitializer: heInit() as never }));
      else model.add(tf.layers.separableConv2d({ ...common, filters, depthwiseInitializer: heInit() as never, pointwiseInitializer: heInit() as never }));
      model.add(tf.layers.maxPooling2d({ poolSize: 2 }));
    }
    model.add(tf.layers.flatten());
  }
  for (const units of arch.hidden) {
    model.add(tf.layers.dense({ units, activation: 'relu', kernelInitializer: heInit() as never }));
    if (dropout > 0) model.add(tf.layers.dropout({ rate: dropout }));
  }
  model.add(tf.layers.dense({ units: classes, kernelInitializer: init() as never }));
  return model;
}

/** Number of trainable parameters. */
export function countParams(model: tf.LayersModel): number {
  return model.countParams();
}
