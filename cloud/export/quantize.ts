import { OnnxFormatError } from './errors.js';
import { decodeModel } from './inspect.js';
import {
  DataType, GraphBuilder, encodeModel, floatTensor, int8Tensor, tensorToFloat32, toNumber,
  type AttributeProto, type DecodedGraph, type NodeProto, type TensorProto,
} from './onnx-builder.js';

/**
 * Post-training int8 *weight* quantization of an exported fp32 graph (no calibration data needed).
 *
 * Forms (all plain ai.onnx opset-13 ops, no contrib ops in the file):
 *  - 'dynamic'     x → DynamicQuantizeLinear (uint8, per call) → MatMulInteger(x_q, W_int8) → Cast →
 *                  Mul(x_scale·w_scale) → Add(bias). Same node pattern as onnxruntime's
 *                  quantize_dynamic on x64 (U8S8), which ORT's MatMulIntegerToFloat fusion turns into
 *                  one DynamicQuantizeMatMul kernel. int8 compute.
 *  - 'qdq'         DynamicQuantizeLinear → DequantizeLinear on x, DequantizeLinear on W → MatMul.
 *                  QDQ spelling of the same maths; int8 compute only if ORT's QDQ transformer
 *                  fuses it, which ORT 1.30 does not (measured below): fp32 plus dequantisations.
 *  - 'weight-only' W_int8 → DequantizeLinear → MatMul/Gemm: fp32 compute, 4x smaller weights.
 *  A QLinearMatMul form is not offered: it needs a *static* output scale per layer, i.e. calibration
 *  data, which this bytes-in/bytes-out API does not have.
 *
 * Conv weights are stored int8 with a per-output-channel DequantizeLinear in every form, with fp32
 * Conv compute: a ConvInteger form would need its own uint8-weight/zero-point path and measurement,
 * and the convs in our students are small, so the win there is file size only.
 *
 * Default form: chosen by measurement (test/bench/export.bench.ts → test/bench/results/export.json),
 * on this x64 Xeon (AVX512-VNNI), ORT 1.30, 1 thread:
 *   latency ratio vs fp32 Gemm, same run (batch 1 / batch 64); size ratio vs fp32 file
 *   variant                    784-800-800-10          784-64-10
 *   fp32 MatMul+Add            0.99 / 1.00  size 1.00  1.01 / 1.00  size 1.00
 *   int8 dynamic (per-column)  0.24 / 0.24  size 0.25  1.17 / 0.66  size 0.26
 *   int8 dynamic per-tensor    0.22 / 0.24  size 0.25  1.16 / 0.64  size 0.26
 *   int8 dynamic reduce-range  0.24 / 0.25  size 0.25  1.19 / 0.59  size 0.26
 *   int8 qdq                   6.4  / 2.8   size 0.25  10.0 / 2.8   size 0.26
 *   int8 weight-only           6.3  / 2.8   size 0.25  9.9  / 2.4   size 0.26
 *   (fp32 absolute: 0.28 ms / 1.05 ms and 0.009 ms / 0.06 ms.)
 * 'dynamic' wins wherever there is real work (ORT fuses it into DynamicQuantizeMatMul); qdq and
 * weight-only re-dequantize the weights on every call (ORT does not constant-fold or fuse them here),
 * so they only buy file size. Note that DynamicQuantizeLinear picks one activation scale per *call*,
 * so in batched inference one outlier row coarsens the others (negligible at our MNIST-scale inputs).
 *
 * arm64: MLAS has optimised U8S8/U8U8 MatMulInteger kernels for arm64 as well (NEON udot/sdot,
 * i8mm on newer cores), so 'dynamic' is the expected winner there too; re-run the bench on the
 * device class before changing the default per target. x64 without VNNI (pre-Cascade Lake, most
 * AVX2-only parts): the U8S8 kernel uses vpmaddubsw, whose int16 intermediate can saturate with
 * full-range int8 weights. The signer cannot know which CPU a device has, and this saturation was
 * measured here (AMD EPYC without VNNI: 98.8% top-1 agreement at full range vs >= 99% at 7 bits on the
 * quantize test's MLP), so 7-bit weights (`reduceRange: true`) are the default; pass false for a fleet
 * known to be arm64 or VNNI.
 */
export type QuantForm = 'dynamic' | 'qdq' | 'weight-only';
export const QUANT_FORMS: readonly QuantForm[] = ['dynamic', 'qdq', 'weight-only'];

export interface QuantizeOptions {
  form?: QuantForm;
  /** Per-output-column weight scales (default true): better accuracy for ~3% latency (measured). */
  perChannel?: boolean;
  /** 7-bit weights ([-64, 63]) to avoid U8S8 saturation on x64 CPUs without VNNI. Default true. */
  reduceRange?: boolean;
  /**
   * Conv lowering: `fp32` (conv weights left in fp32, only dense layers quantized: the default),
   * `weight-only` (int8 weights → DequantizeLinear → fp32 Conv) or `integer` (DynamicQuantizeLinear →
   * ConvInteger → Cast → Mul by the scales → Add bias: int8 compute, no calibration).
   * Measured (test/bench/conv-int8.bench.ts → results/conv-int8.json, ORT 1.30, batch 1, 1 thread,
   * latency vs the fp32 file for cnn:16,32 / dscnn:16,32 / cnn:32,64): conv fp32 1.49 / 1.07 / 0.90×,
   * weight-only 2.02 / 1.49 / 1.55×, ConvInteger 5.25 / 7.14 / 4.08×. ORT dequantizes int8 conv
   * weights on every call and has no fast small-conv integer kernel, so convs stay fp32; conv weights
   * are a small share of these students' bytes. (For such small students the fp32 file itself is the
   * fastest: ship `artifact: fp32` when latency matters more than bytes.)
   */
  convForm?: ConvForm;
}

export type ConvForm = 'fp32' | 'weight-only' | 'integer';
export const CONV_FORMS: readonly ConvForm[] = ['fp32', 'weight-only', 'integer'];

/** Fastest int8 form measured here (table above); per-column scales by default for accuracy. */
export const DEFAULT_QUANT_FORM: QuantForm = 'dynamic';
/** Conv lowering by default; see the conv-int8 bench for the measurement behind it. */
export const DEFAULT_CONV_FORM: ConvForm = 'fp32';

interface Quantized {
  q: Int8Array;
  scale: Float32Array;
}

/**
 * Symmetric int8 quantization of a row-major [rows, cols] matrix with one scale per column
 * (`axis` 1) or per row (`axis` 0, used for Conv OIHW viewed as [cout, rest]), or one for all.
 */
export function quantizeSymmetric(w: Float32Array, rows: number, cols: number, axis: 0 | 1, perChannel: boolean, reduceRange: boolean): Quantized {
  const qmax = reduceRange ? 63 : 127;
  const channels = perChannel ? (axis === 1 ? cols : rows) : 1;
  const absMax = new Float64Array(channels);
  const chan = (r: number, c: number): number => (perChannel ? (axis === 1 ? c : r) : 0);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const k = chan(r, c);
      absMax[k] = Math.max(absMax[k] as number, Math.abs(w[r * cols + c] as number));
    }
  // An all-zero channel gets scale 1 (any positive value works; 0 would be a degenerate scale).
  const scale = Float32Array.from(absMax, (m) => (m > 0 ? m / qmax : 1));
  const q = new Int8Array(w.length);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const v = Math.round((w[r * cols + c] as number) / (scale[chan(r, c)] as number));
      q[r * cols + c] = Math.max(-qmax - 1, Math.min(qmax, v));
    }
  return { q, scale };
}

function attr(node: NodeProto, name: string): AttributeProto | undefined {
  return node.attribute?.find((a) => a.name === name);
}
function attrNum(node: NodeProto, name: string, dflt: number): number {
  const a = attr(node, name);
  if (!a) return dflt;
  return a.type === 1 ? (a.f ?? dflt) : toNumber(a.i as number);
}

/** A float weight initializer of the expected rank used by `node` as input #index, or undefined. */
function weightOf(node: NodeProto, index: number, inits: Map<string, TensorProto>, rank: number): { t: TensorProto; dims: number[] } | undefined {
  const t = inits.get(node.input?.[index] ?? '');
  if (!t || t.dataType !== DataType.FLOAT) return undefined;
  const dims = (t.dims ?? []).map((d) => toNumber(d));
  return dims.length === rank ? { t, dims } : undefined;
}

class Quantizer {
  /** Initializers replaced by their int8 version; dropped at the end if nothing else reads them. */
  readonly replaced = new Set<string>();

  constructor(readonly g: GraphBuilder, readonly inits: Map<string, TensorProto>, readonly opts: Required<QuantizeOptions>) {}

  private int8(base: string, q: Quantized, dims: number[]): { q: string; scale: string } {
    const scaleDims = q.scale.length === 1 ? [] : [q.scale.length];
    return {
      q: this.g.addInitializer((n) => int8Tensor(n, q.q, dims), `${base}_int8`),
      scale: this.g.addInitializer((n) => floatTensor(n, q.scale, scaleDims), `${base}_scale`),
    };
  }

  private dequant(base: string, q: { q: string; scale: string }, axis: number): string {
    return this.g.op('DequantizeLinear', [q.q, q.scale], `${base}_dq`, { axis: { i: axis } });
  }

  /** Emits the int8 replacement of `y = x·W (+ bias)`, W a [K, N] float initializer, into g.nodes. */
  matmul(node: NodeProto, x: string, w: TensorProto, k: number, n: number, bias: string | undefined, y: string): void {
    const base = (w.name ?? 'w').replace(/_kernel$/, '');
    const q = quantizeSymmetric(tensorToFloat32(w), k, n, 1, this.opts.perChannel, this.opts.reduceRange);
    const names = this.int8(base, q, [k, n]);
    this.replaced.add(w.name ?? '');
    const g = this.g;
    let acc: string;
    if (this.opts.form === 'weight-only') {
      const wf = this.dequant(base, names, 1);
      if (node.opType === 'Gemm') {
        g.nodes.push({ ...node, input: [x, wf, ...(bias ? [bias] : [])], output: [y] });
        return;
      }
      acc = g.op('MatMul', [x, wf], base);
    } else {
      const [xq, xs, xz] = g.node('DynamicQuantizeLinear', [x], `${base}_x`, {}, 3) as [string, string, string];
      if (this.opts.form === 'dynamic') {
        const mmi = g.op('MatMulInteger', [xq, names.q, xz], base);
        const cast = g.op('Cast', [mmi], base, { to: { i: DataType.FLOAT } });
        acc = g.op('Mul', [cast, g.op('Mul', [xs, names.scale], `${base}_scale`)], base);
      } else {
        const xf = g.op('DequantizeLinear', [xq, xs, xz], `${base}_x_dq`);
        acc = g.op('MatMul', [xf, this.dequant(base, names, 1)], base);
      }
    }
    if (bias) g.op('Add', [acc, bias], base);
    const last = g.nodes[g.nodes.length - 1] as NodeProto;
    (last.output as string[])[0] = y;
  }

  conv(node: NodeProto, w: TensorProto, dims: number[]): void {
    const [cout, ...rest] = dims as [number, ...number[]];
    const inner = rest.reduce((a, d) => a * d, 1);
    const base = (w.name ?? 'w').replace(/_kernel$/, '');
    const q = quantizeSymmetric(tensorToFloat32(w), cout, inner, 0, this.opts.perChannel, this.opts.reduceRange);
    this.replaced.add(w.name ?? '');
    const input = [...(node.input ?? [])];
    if (this.opts.convForm === 'integer') {
      const wq = this.g.addInitializer((n) => int8Tensor(n, q.q, dims), `${base}_int8`);
      return this.convInteger(node, base, input, wq, q.scale, cout);
    }
    input[1] = this.dequant(base, this.int8(base, q, dims), 0);
    this.g.nodes.push({ ...node, input });
  }

  /** y = Cast(ConvInteger(x_q, W_int8, x_zp)) · (x_scale · w_scale[c]) + b[c], channel axis 1 (NCHW). */
  private convInteger(node: NodeProto, base: string, input: string[], wq: string, scale: Float32Array, cout: number): void {
    const g = this.g;
    const [x, , bias] = input as [string, string, string | undefined];
    const [xq, xs, xz] = g.node('DynamicQuantizeLinear', [x], `${base}_x`, {}, 3) as [string, string, string];
    const ci = g.op('ConvInteger', [xq, wq, xz], base);
    // Copy the conv attributes (kernel_shape, strides, pads, group) onto ConvInteger.
    const last = g.nodes[g.nodes.length - 1] as NodeProto;
    last.attribute = node.attribute ?? [];
    const cast = g.op('Cast', [ci], base, { to: { i: DataType.FLOAT } });
    const wScale = g.float(`${base}_wscale`, scale, scale.length === 1 ? [] : [cout, 1, 1]);
    let acc = g.op('Mul', [cast, g.op('Mul', [xs, wScale], `${base}_scale`)], base);
    if (bias) {
      // The [C] bias is re-shaped to [C, 1, 1] to broadcast over NCHW; the original is then unused.
      this.replaced.add(bias);
      const b = tensorToFloat32(this.inits.get(bias)!);
      acc = g.op('Add', [acc, g.float(`${base}_bias_c11`, b, [cout, 1, 1])], base);
    }
    (g.nodes[g.nodes.length - 1]!.output as string[])[0] = node.output?.[0] ?? '';
  }

  visit(node: NodeProto): void {
    const ins = node.input ?? [];
    const y = node.output?.[0] ?? '';
    if (node.opType === 'MatMul' && !node.domain) {
      const w = weightOf(node, 1, this.inits, 2);
      if (w) return this.matmul(node, ins[0] ?? '', w.t, w.dims[0] as number, w.dims[1] as number, undefined, y);
    }
    // Only the plain Gemm our exporter emits (no transposes, unit alpha/beta) is rewritten.
    if (node.opType === 'Gemm' && !node.domain && attrNum(node, 'transA', 0) === 0 && attrNum(node, 'transB', 0) === 0 &&
        attrNum(node, 'alpha', 1) === 1 && attrNum(node, 'beta', 1) === 1) {
      const w = weightOf(node, 1, this.inits, 2);
      if (w) return this.matmul(node, ins[0] ?? '', w.t, w.dims[0] as number, w.dims[1] as number, ins[2] || undefined, y);
    }
    if (node.opType === 'Conv' && !node.domain && this.opts.convForm !== 'fp32') {
      const w = weightOf(node, 1, this.inits, 4);
      if (w) return this.conv(node, w.t, w.dims);
    }
    this.g.nodes.push(node);
  }
}

/** Quantizes the weights of an fp32 ONNX model (as produced by exportToOnnx) to int8. */
export function quantizeInt8(fp32Onnx: Uint8Array, opts: QuantizeOptions = {}): Uint8Array {
  const model = decodeModel(fp32Onnx);
  const full: Required<QuantizeOptions> = { form: opts.form ?? DEFAULT_QUANT_FORM, perChannel: opts.perChannel ?? true, reduceRange: opts.reduceRange ?? true, convForm: opts.convForm ?? DEFAULT_CONV_FORM };
  if (!CONV_FORMS.includes(full.convForm)) throw new OnnxFormatError(`unknown conv quantization form "${String(full.convForm)}" (expected ${CONV_FORMS.join(', ')})`);
  if (!QUANT_FORMS.includes(full.form)) throw new OnnxFormatError(`unknown quantization form "${String(full.form)}" (expected ${QUANT_FORMS.join(', ')})`);
  const graph = model.graph as DecodedGraph;
  const opset = model.opsetImport.find((o) => !o.domain || o.domain === 'ai.onnx');
  if (toNumber(opset?.version) < 13) throw new OnnxFormatError(`quantization needs opset >= 13 (per-axis DequantizeLinear), model has ${toNumber(opset?.version)}`);

  const inits = new Map(graph.initializer.map((t) => [t.name ?? '', t]));
  const names = [...inits.keys(), ...graph.input.map((i) => i.name ?? ''), ...graph.node.flatMap((n) => [...(n.output ?? []), n.name ?? ''])];
  const q = new Quantizer(new GraphBuilder(names), inits, full);
  for (const node of graph.node) q.visit(node);

  const stillUsed = new Set(q.g.nodes.flatMap((n) => n.input ?? []));
  graph.node = q.g.nodes;
  graph.initializer = [...graph.initializer.filter((t) => !q.replaced.has(t.name ?? '') || stillUsed.has(t.name ?? '')), ...q.g.initializers];
  model.metadataProps = [...model.metadataProps.filter((p) => p.key !== 'quantization'), { key: 'quantization', value: `int8:${full.form}${full.perChannel ? ':per-channel' : ''}${full.reduceRange ? ':reduce-range' : ''}${full.convForm === 'integer' ? ':conv-integer' : ''}` }];
  return encodeModel(model);
}
