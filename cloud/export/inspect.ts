import { OnnxFormatError } from './errors.js';
import { DataType, onnx, toNumber, type DecodedGraph, type DecodedModel, type TensorProto, type ValueInfoProto } from './onnx-builder.js';

export interface OnnxTensorInfo {
  name: string;
  /** Numbers for fixed dims, the dim_param string (e.g. 'N') for symbolic ones, null if unknown. */
  shape: (number | string | null)[];
  /** ONNX TensorProto.DataType name, e.g. 'FLOAT'. */
  elemType: string;
}

export interface OnnxModelInfo {
  /** Default-domain ('' / 'ai.onnx') opset. */
  opset: number;
  irVersion: number;
  producerName: string;
  inputs: OnnxTensorInfo[];
  outputs: OnnxTensorInfo[];
  /** op_type of every node in graph order (with a `domain:` prefix for non-default domains). */
  nodeOps: string[];
  /** Total bytes of initializer data: what dominates the file size. */
  initializerBytes: number;
  metadata: Record<string, string>;
}

const ELEM_BYTES: Record<number, number> = {
  [DataType.FLOAT]: 4, [DataType.UINT8]: 1, [DataType.INT8]: 1, [DataType.UINT16]: 2, [DataType.INT16]: 2,
  [DataType.INT32]: 4, [DataType.INT64]: 8, [DataType.BOOL]: 1, [DataType.FLOAT16]: 2, [DataType.DOUBLE]: 8,
  [DataType.UINT32]: 4, [DataType.UINT64]: 8, [DataType.BFLOAT16]: 2,
};

function typeName(t: number | null | undefined): string {
  return (onnx.TensorProto.DataType as unknown as Record<number, string>)[t ?? 0] ?? `UNKNOWN(${t})`;
}

/**
 * Decodes ONNX bytes. protobuf is permissive (random bytes often decode into *something*), so after
 * decoding we also check the structure a runnable model must have; every failure is an OnnxFormatError.
 */
export function decodeModel(bytes: Uint8Array): DecodedModel {
  if (!(bytes instanceof Uint8Array)) throw new OnnxFormatError(`expected ONNX bytes as a Uint8Array, got ${typeof bytes}`);
  if (bytes.length === 0) throw new OnnxFormatError('empty ONNX bytes');
  let model: DecodedModel;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (err) {
    throw new OnnxFormatError(`not an ONNX model (${bytes.length} bytes; protobuf decode failed: ${(err as Error).message}); truncated or corrupt file?`);
  }
  const problem = structuralProblem(model);
  if (problem) throw new OnnxFormatError(`not a valid ONNX model (${bytes.length} bytes): ${problem}`);
  return model;
}

function structuralProblem(m: DecodedModel): string | undefined {
  if (toNumber(m.irVersion) <= 0) return 'missing ir_version';
  if (!m.opsetImport.some((o) => !o.domain || o.domain === 'ai.onnx')) return 'no default-domain opset_import';
  const g = m.graph as DecodedGraph | null;
  if (!g) return 'missing graph';
  if (g.output.length === 0) return 'graph has no outputs';
  const inits = new Set(g.initializer.map((t) => t.name));
  if (!g.input.some((i) => !inits.has(i.name))) return 'graph has no (non-initializer) inputs';
  if (g.node.length === 0) return 'graph has no nodes';
  const badNode = g.node.find((n) => !n.opType || !n.output?.length);
  if (badNode) return `node "${badNode.name}" has no op_type or outputs`;
  for (const t of g.initializer) {
    const size = ELEM_BYTES[t.dataType ?? 0];
    const n = (t.dims ?? []).reduce((a: number, d) => a * toNumber(d), 1);
    const raw = t.rawData?.length ?? 0;
    if (size !== undefined && raw > 0 && raw !== n * size) {
      return `initializer "${t.name}" has ${raw} bytes of data for ${n} ${typeName(t.dataType)} elements`;
    }
  }
  return undefined;
}

function tensorInfo(v: ValueInfoProto): OnnxTensorInfo {
  const tt = v.type?.tensorType;
  const shape = (tt?.shape?.dim ?? []).map((d) => (d.dimParam ? d.dimParam : d.dimValue !== null && d.dimValue !== undefined ? toNumber(d.dimValue) : null));
  return { name: v.name ?? '', shape, elemType: typeName(tt?.elemType) };
}

/** Bytes of data an initializer carries, whichever storage field it uses. */
export function initializerByteSize(t: TensorProto): number {
  if (t.rawData && t.rawData.length > 0) return t.rawData.length;
  const size = ELEM_BYTES[t.dataType ?? 0] ?? 4;
  const count = (t.floatData?.length ?? 0) + (t.int32Data?.length ?? 0) + (t.int64Data?.length ?? 0) + (t.doubleData?.length ?? 0) + (t.uint64Data?.length ?? 0);
  return count * size;
}

/** Summarises an ONNX model; throws OnnxFormatError on empty, truncated or non-ONNX bytes. */
export function inspectOnnx(bytes: Uint8Array): OnnxModelInfo {
  const m = decodeModel(bytes);
  const g = m.graph as DecodedGraph;
  const inits = new Set(g.initializer.map((t) => t.name));
  const def = m.opsetImport.find((o) => !o.domain || o.domain === 'ai.onnx');
  return {
    opset: toNumber(def?.version),
    irVersion: toNumber(m.irVersion),
    producerName: m.producerName,
    inputs: g.input.filter((i) => !inits.has(i.name)).map(tensorInfo),
    outputs: g.output.map(tensorInfo),
    nodeOps: g.node.map((n) => (n.domain && n.domain !== 'ai.onnx' ? `${n.domain}:${n.opType}` : (n.opType ?? ''))),
    initializerBytes: g.initializer.reduce((a, t) => a + initializerByteSize(t), 0),
    metadata: Object.fromEntries(m.metadataProps.map((p) => [p.key ?? '', p.value ?? ''])),
  };
}
