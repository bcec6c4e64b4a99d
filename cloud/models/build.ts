import * as tf from '@tensorflow/tfjs';
import type { ArchSpec } from './spec.js';

export interface BuildOptions {
  inputSize: number;
  classes: number;
  /** Dropout on hidden activations (Hinton et al. used 0.5). */
  dropout?: number;
  /** Dropout on the input (Hinton et al. used 0.2 with 0.5 hidden). */
  inputDropout?: number;
  seed?: number;
}

/** Builds the tfjs model for an architecture. The last layer is linear: the model outputs logits. */
export function buildModel(arch: ArchSpec, { inputSize, classes, dropout = 0, inputDropout = 0, seed }: BuildOptions): tf.Sequential {
  const model = tf.sequential();
  let s = seed;
  const init = () => (s === undefined ? 'glorotUniform' : tf.initializers.glorotUniform({ seed: s++ }));
  const heInit = () => (s === undefined ? 'heNormal' : tf.initializers.heNormal({ seed: s++ }));
  model.add(tf.layers.inputLayer({ inputShape: [inputSize] }));
  if (inputDropout > 0) model.add(tf.layers.dropout({ rate: inputDropout }));
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

