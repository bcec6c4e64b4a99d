import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { OnnxExportError, OnnxFormatError, exportToOnnx, inspectOnnx } from '../../../cloud/export/index.js';
import { rand, setup } from './helpers.js';

beforeAll(setup);

function exportError(model: tf.LayersModel, opts = {}): OnnxExportError {
  try {
    exportToOnnx(model, opts);
  } catch (err) {
    expect(err).toBeInstanceOf(OnnxExportError);
    return err as OnnxExportError;
  }
  throw new Error('exportToOnnx did not throw');
}

describe('unsupported models throw OnnxExportError naming the layer and class', () => {
  const cases: [string, () => tf.layers.Layer[], string, RegExp][] = [
    ['LSTM', () => [tf.layers.lstm({ inputShape: [5, 3], units: 4, name: 'my_lstm' }), tf.layers.dense({ units: 2 })], 'LSTM', /not supported/],
    ['Dense with elu', () => [tf.layers.dense({ inputShape: [4], units: 3, activation: 'elu', name: 'my_dense' })], 'Dense', /activation "elu"/],
    ['Activation swish', () => [tf.layers.dense({ inputShape: [4], units: 3 }), tf.layers.activation({ activation: 'swish', name: 'my_act' })], 'Activation', /activation "swish"/],
    ['Conv2D with dilation', () => [tf.layers.conv2d({ inputShape: [8, 8, 1], filters: 2, kernelSize: 3, dilationRate: 2, name: 'my_conv' })], 'Conv2D', /dilationRate/],
    ['Conv2D channelsFirst', () => [tf.layers.conv2d({ inputShape: [1, 8, 8], filters: 2, kernelSize: 3, dataFormat: 'channelsFirst', name: 'my_conv' })], 'Conv2D', /dataFormat/],
    ['Conv1D causal', () => [tf.layers.conv1d({ inputShape: [8, 2], filters: 2, kernelSize: 3, padding: 'causal', name: 'my_conv1d' })], 'Conv1D', /not supported/],
    ['BatchNormalization over axis 1', () => [tf.layers.reshape({ inputShape: [6], targetShape: [2, 3] }), tf.layers.batchNormalization({ axis: 1, name: 'my_bn' })], 'BatchNormalization', /axis 1/],
    // (A nested model as the *first* layer is inlined by tfjs itself; later ones stay a single layer.)
    ['nested Sequential', () => [tf.layers.dense({ inputShape: [4], units: 4 }), tf.sequential({ layers: [tf.layers.dense({ inputShape: [4], units: 3 })], name: 'my_inner' }) as unknown as tf.layers.Layer], 'Sequential', /not supported/],
  ];
  for (const [label, layers, cls, msg] of cases) {
    it(label, () => {
      const built = layers();
      const model = tf.sequential({ layers: built });
      const err = exportError(model);
      const name = built.find((l) => l.getClassName() === cls)?.name as string;
      expect(err.layerName).toBe(name);
      expect(err.layerClass).toBe(cls);
      expect(err.message).toContain(name);
      expect(err.message).toMatch(msg);
    });
  }

  it('a non-chain functional model (two branches joined by Add)', () => {
    const input = tf.input({ shape: [4] });
    const a = tf.layers.dense({ units: 3 }).apply(input) as tf.SymbolicTensor;
    const b = tf.layers.dense({ units: 3 }).apply(input) as tf.SymbolicTensor;
    const sum = tf.layers.add({ name: 'join' }).apply([a, b]) as tf.SymbolicTensor;
    const err = exportError(tf.model({ inputs: input, outputs: sum }));
    expect(err.layerName).toBe('join');
    expect(err.message).toMatch(/not a linear chain/);
  });

  it('a multi-input model, and opset < 13', () => {
    const x1 = tf.input({ shape: [2] });
    const x2 = tf.input({ shape: [2] });
    const out = tf.layers.concatenate().apply([x1, x2]) as tf.SymbolicTensor;
    expect(exportError(tf.model({ inputs: [x1, x2], outputs: out })).message).toMatch(/single-input/);
    const mlp = tf.sequential({ layers: [tf.layers.dense({ inputShape: [2], units: 2 })] });
    expect(exportError(mlp, { opset: 12 }).message).toMatch(/opset/);
    expect(exportError(tf.sequential()).message).toMatch(/no layers/);
  });
});

describe('inspectOnnx rejects malformed bytes with OnnxFormatError', () => {
  const valid = (): Uint8Array => exportToOnnx(tf.sequential({ layers: [tf.layers.dense({ inputShape: [3], units: 2, activation: 'relu' })] }));

  it('empty', () => {
    expect(() => inspectOnnx(new Uint8Array(0))).toThrow(OnnxFormatError);
    expect(() => inspectOnnx(new Uint8Array(0))).toThrow(/empty ONNX bytes/);
  });

  it('garbage (random bytes, text)', () => {
    for (let seed = 1; seed <= 30; seed++) {
      const bytes = Uint8Array.from(rand(1 + seed * 37, seed, 0, 256), Math.floor);
      expect(() => inspectOnnx(bytes), `seed ${seed}`).toThrow(OnnxFormatError);
    }
    expect(() => inspectOnnx(new TextEncoder().encode('{"not": "onnx"}'))).toThrow(/not (an|a valid) ONNX model/);
  });

  it('truncated at any point', () => {
    const bytes = valid();
    for (const cut of [1, 5, 20, Math.floor(bytes.length / 2), bytes.length - 1]) {
      expect(() => inspectOnnx(bytes.subarray(0, cut)), `cut ${cut}`).toThrow(OnnxFormatError);
    }
    expect(inspectOnnx(bytes).nodeOps).toEqual(['Gemm', 'Relu']);
  });
});
