import type { IrOp } from './layers.js';
import type { GraphBuilder } from './onnx-builder.js';

/**
 * Step 2 of the export: IR ops → ONNX nodes.
 *
 * Layout: the graph input/output stay NHWC exactly like tfjs, so callers feed the same buffers to
 * both. ONNX Conv/MaxPool/AveragePool only take NCHW, so we Transpose to NCHW lazily before the first
 * spatial op and back to NHWC lazily before anything whose result depends on the element order
 * (Flatten, Reshape, Dense, Softmax, the graph output). Runs of conv/pool/elementwise ops therefore
 * stay in NCHW with no transposes between them, and Flatten sees the same order as tfjs.
 *
 * Dense form: `gemm` (one Gemm node) or `matmul` (MatMul + Add). ORT fuses MatMul+Add into Gemm for
 * 2-D inputs anyway, and the measured difference is within noise (see test/bench/export.bench.ts,
 * `dense form` rows), so we emit Gemm for rank-2 inputs (one node, smaller graph, obvious to readers)
 * and MatMul+Add when tfjs applies Dense to the last axis of a rank>2 tensor (Gemm is 2-D only).
 */
export type DenseForm = 'gemm' | 'matmul';

interface State {
  name: string;
  /** Rank including batch. */
  rank: number;
  layout: 'nhwc' | 'nchw';
}

const TO_NCHW = [0, 3, 1, 2];
const TO_NHWC = [0, 2, 3, 1];

function toNchw(g: GraphBuilder, s: State, base: string): State {
  if (s.layout === 'nchw') return s;
  if (s.rank !== 4) throw new Error(`internal: ${base} needs a rank-4 tensor, got rank ${s.rank}`);
  return { ...s, name: g.op('Transpose', [s.name], `${base}_to_nchw`, { perm: { ints: TO_NCHW } }), layout: 'nchw' };
}

export function toNhwc(g: GraphBuilder, s: State, base: string): State {
  if (s.layout === 'nhwc') return s;
  return { ...s, name: g.op('Transpose', [s.name], `${base}_to_nhwc`, { perm: { ints: TO_NHWC } }), layout: 'nhwc' };
}

/** tfjs/TF 'same' padding: total = max((ceil(in/s)-1)·s + k − in, 0), extra pixel at the end. */
function spatialPads(inHW: number[], kernel: [number, number], strides: [number, number], padding: 'valid' | 'same'): number[] {
  if (padding === 'valid') return [0, 0, 0, 0];
  const begin: number[] = [];
  const end: number[] = [];
  for (let i = 0; i < 2; i++) {
    const n = inHW[i] as number;
    const s = strides[i] as number;
    const total = Math.max((Math.ceil(n / s) - 1) * s + (kernel[i] as number) - n, 0);
    begin.push(Math.floor(total / 2));
    end.push(total - Math.floor(total / 2));
  }
  return [...begin, ...end];
}

/** HWIO [kh,kw,cin,cout] → OIHW [cout,cin,kh,kw], the ONNX Conv weight layout. */
function hwioToOihw(w: Float32Array, kh: number, kw: number, cin: number, cout: number): Float32Array {
  const out = new Float32Array(w.length);
  for (let y = 0; y < kh; y++)
    for (let x = 0; x < kw; x++)
      for (let i = 0; i < cin; i++)
        for (let o = 0; o < cout; o++) out[((o * cin + i) * kh + y) * kw + x] = w[((y * kw + x) * cin + i) * cout + o] as number;
  return out;
}

function emitOp(g: GraphBuilder, op: IrOp, s: State, denseForm: DenseForm): State {
  const base = op.layer;
  switch (op.kind) {
    case 'dense': {
      const x = toNhwc(g, s, base);
      const w = g.float(`${base}_kernel`, op.w, [op.inDim, op.outDim]);
      const b = g.float(`${base}_bias`, op.b, [op.outDim]);
      if (x.rank === 2 && denseForm === 'gemm') return { ...x, name: g.op('Gemm', [x.name, w, b], base) };
      const mm = g.op('MatMul', [x.name, w], base);
      return { ...x, name: g.op('Add', [mm, b], base) };
    }
    case 'conv': {
      const x = toNchw(g, s, base);
      const [kh, kw] = op.kernel;
      const w = g.float(`${base}_kernel`, hwioToOihw(op.w, kh, kw, op.cin, op.cout), [op.cout, op.cin, kh, kw]);
      const b = g.float(`${base}_bias`, op.b, [op.cout]);
      const pads = spatialPads(op.inShape, op.kernel, op.strides, op.padding);
      const attrs = { kernel_shape: { ints: op.kernel }, strides: { ints: op.strides }, pads: { ints: pads }, ...(op.group > 1 ? { group: { i: op.group } } : {}) };
      return { ...x, name: g.op('Conv', [x.name, w, b], base, attrs) };
    }
    case 'pool': {
      const x = toNchw(g, s, base);
      const attrs = { kernel_shape: { ints: op.pool }, strides: { ints: op.strides }, pads: { ints: spatialPads(op.inShape, op.pool, op.strides, op.padding) } };
      // TF's average pooling ignores padded cells, i.e. count_include_pad = 0 (the ONNX default too).
      if (op.type === 'max') return { ...x, name: g.op('MaxPool', [x.name], base, attrs) };
      return { ...x, name: g.op('AveragePool', [x.name], base, { ...attrs, count_include_pad: { i: 0 } }) };
    }
    case 'act': {
      if (op.act === 'softmax') {
        const x = toNhwc(g, s, base);
        return { ...x, name: g.op('Softmax', [x.name], base, { axis: { i: op.axis } }) };
      }
      if (op.act === 'relu6') return emitOp(g, { ...op, kind: 'clip', min: 0, max: 6 }, s, denseForm);
      const onnxOp = { relu: 'Relu', sigmoid: 'Sigmoid', tanh: 'Tanh' }[op.act];
      return { ...s, name: g.op(onnxOp, [s.name], base) };
    }
    case 'clip': {
      // Opset 11+ Clip takes min/max as (scalar) inputs, not attributes.
      const lo = g.float(`${base}_min`, Float32Array.of(op.min), []);
      const hi = g.float(`${base}_max`, Float32Array.of(op.max), []);
      return { ...s, name: g.op('Clip', [s.name, lo, hi], base) };
    }
    case 'scaleShift': {
      // Standalone BN (not after Dense/Conv): per-channel Mul+Add. In NCHW the channel axis is 1, so
      // shape the constants [C,1,1] to broadcast; otherwise channels are last and [C] broadcasts.
      const c = op.scale.length;
      const dims = s.layout === 'nchw' ? [c, 1, 1] : [c];
      const scale = g.float(`${base}_scale`, op.scale, dims);
      const shift = g.float(`${base}_shift`, op.shift, dims);
      return { ...s, name: g.op('Add', [g.op('Mul', [s.name, scale], base), shift], base) };
    }
    case 'flatten': {
      if (s.rank === 2) return s;
      const x = toNhwc(g, s, base);
      return { ...x, rank: 2, name: g.op('Flatten', [x.name], base, { axis: { i: 1 } }) };
    }
    case 'reshape': {
      // 0 copies the (dynamic) batch dimension; the rest is resolved statically from tfjs shapes.
      const x = toNhwc(g, s, base);
      const shape = g.int64(`${base}_shape`, [0, ...op.target]);
      return { rank: op.target.length + 1, layout: 'nhwc', name: g.op('Reshape', [x.name, shape], base) };
    }
  }
}

/** Emits all ops starting from the graph input; returns the name of the final NHWC tensor. */
export function emitGraph(g: GraphBuilder, ops: IrOp[], inputName: string, inputRank: number, denseForm: DenseForm = 'gemm'): string {
  let s: State = { name: inputName, rank: inputRank, layout: 'nhwc' };
  for (const op of ops) s = emitOp(g, op, s, denseForm);
  return toNhwc(g, s, 'output').name;
}
