import onnxPkg from 'onnx-proto';
import type { onnx as OnnxTypes } from 'onnx-proto';

/**
 * Thin helpers over the `onnx-proto` (protobufjs static code) message classes.
 * `onnx-proto` is CommonJS whose `module.exports` is the protobufjs root, so Node's ESM loader only
 * exposes it as the default export: we unwrap it once here and every other module imports from here.
 */
export const onnx = onnxPkg.onnx;
export type NodeProto = OnnxTypes.INodeProto;
export type TensorProto = OnnxTypes.ITensorProto;
export type ModelProto = OnnxTypes.IModelProto;
export type GraphProto = OnnxTypes.IGraphProto;
export type AttributeProto = OnnxTypes.IAttributeProto;
export type ValueInfoProto = OnnxTypes.IValueInfoProto;
/** Decoded (class instance) forms: repeated fields are always arrays, scalars have defaults. */
export type DecodedModel = OnnxTypes.ModelProto;
export type DecodedGraph = OnnxTypes.GraphProto;

export const DataType = onnx.TensorProto.DataType;
const AttrType = onnx.AttributeProto.AttributeType;

/** Attribute values we emit: numbers are INT when integral-typed by the caller, see helpers below. */
export type AttrValue =
  | { i: number }
  | { f: number }
  | { ints: number[] }
  | { floats: number[] }
  | { s: string };

export function toAttribute(name: string, v: AttrValue): AttributeProto {
  if ('i' in v) return { name, type: AttrType.INT, i: v.i };
  if ('f' in v) return { name, type: AttrType.FLOAT, f: v.f };
  if ('ints' in v) return { name, type: AttrType.INTS, ints: v.ints };
  if ('floats' in v) return { name, type: AttrType.FLOATS, floats: v.floats };
  return { name, type: AttrType.STRING, s: new TextEncoder().encode(v.s) };
}

/**
 * Little-endian bytes of a typed array. ONNX raw_data is defined as little-endian; every target we
 * ship to (x64, arm64) is little-endian, so the in-memory layout is already correct. Copied so the
 * proto never aliases a tfjs/ORT buffer that may be reused.
 */
function rawBytes(a: Float32Array | Int8Array | Uint8Array | Int32Array | BigInt64Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength).slice();
}

export function floatTensor(name: string, data: Float32Array, dims: readonly number[]): TensorProto {
  return { name, dataType: DataType.FLOAT, dims: [...dims], rawData: rawBytes(data) };
}

export function int8Tensor(name: string, data: Int8Array, dims: readonly number[]): TensorProto {
  return { name, dataType: DataType.INT8, dims: [...dims], rawData: rawBytes(data) };
}

export function uint8Tensor(name: string, data: Uint8Array, dims: readonly number[]): TensorProto {
  return { name, dataType: DataType.UINT8, dims: [...dims], rawData: rawBytes(data) };
}

export function int64Tensor(name: string, data: readonly number[], dims: readonly number[]): TensorProto {
  return { name, dataType: DataType.INT64, dims: [...dims], rawData: rawBytes(BigInt64Array.from(data, (x) => BigInt(x))) };
}

/** Value info for a float/int tensor; string dims become symbolic (dim_param), e.g. the batch 'N'. */
export function valueInfo(name: string, elemType: number, dims: readonly (number | string)[]): ValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) },
      },
    },
  };
}

/** Reads a FLOAT initializer back into a Float32Array (raw_data or float_data storage). */
export function tensorToFloat32(t: TensorProto): Float32Array {
  if (t.dataType !== DataType.FLOAT) throw new Error(`initializer ${t.name}: expected FLOAT, got data type ${t.dataType}`);
  if (t.rawData && t.rawData.length > 0) {
    // Copy into a fresh, aligned ArrayBuffer: decoded raw_data is a Node Buffer view at any offset
    // (and Buffer#slice would not copy).
    const copy = new Uint8Array(t.rawData);
    return new Float32Array(copy.buffer, 0, copy.byteLength / 4);
  }
  return Float32Array.from(t.floatData ?? []);
}

/** int64 proto fields decode as protobufjs `Long` objects (or numbers); normalise to number. */
export function toNumber(v: number | { toNumber(): number } | null | undefined): number {
  if (v === null || v === undefined) return 0;
  return typeof v === 'number' ? v : v.toNumber();
}

/**
 * Accumulates nodes and initializers with unique tensor names. Names are derived from the tfjs layer
 * names so that a Netron view or an ORT error message points back at the layer it came from.
 */
export class GraphBuilder {
  readonly nodes: NodeProto[] = [];
  readonly initializers: TensorProto[] = [];
  private readonly used = new Set<string>();

  constructor(reserved: Iterable<string> = []) {
    for (const n of reserved) this.used.add(n);
  }

  unique(base: string): string {
    const clean = base.replace(/[^A-Za-z0-9_./:-]/g, '_') || 't';
    let name = clean;
    for (let i = 1; this.used.has(name); i++) name = `${clean}_${i}`;
    this.used.add(name);
    return name;
  }

  addInitializer(make: (name: string) => TensorProto, base: string): string {
    const t = make(this.unique(base));
    this.initializers.push(t);
    return t.name as string;
  }

  float(base: string, data: Float32Array, dims: readonly number[]): string {
    return this.addInitializer((n) => floatTensor(n, data, dims), base);
  }

  int64(base: string, data: readonly number[], dims: readonly number[] = [data.length]): string {
    return this.addInitializer((n) => int64Tensor(n, data, dims), base);
  }

  /** Adds a node; returns its output names (fresh ones derived from `base`, count = `outputs`). */
  node(opType: string, inputs: readonly string[], base: string, attrs: Record<string, AttrValue> = {}, outputs = 1): string[] {
    const outs = Array.from({ length: outputs }, (_, i) => this.unique(outputs === 1 ? `${base}_out` : `${base}_out${i}`));
    this.nodes.push({
      opType,
      name: this.unique(`${base}_${opType}`),
      input: [...inputs],
      output: outs,
      attribute: Object.entries(attrs).map(([k, v]) => toAttribute(k, v)),
    });
    return outs;
  }

  /** Single-output convenience wrapper over `node`. */
  op(opType: string, inputs: readonly string[], base: string, attrs: Record<string, AttrValue> = {}): string {
    return this.node(opType, inputs, base, attrs, 1)[0] as string;
  }
}

/** IR version ORT expects alongside a given default-domain opset (onnx/docs/Versioning.md table). */
export function irVersionForOpset(opset: number): number {
  if (opset <= 14) return 7;
  if (opset <= 18) return 8;
  if (opset <= 20) return 9;
  return 10;
}

export function encodeModel(model: ModelProto): Uint8Array {
  return onnx.ModelProto.encode(onnx.ModelProto.create(model)).finish();
}
