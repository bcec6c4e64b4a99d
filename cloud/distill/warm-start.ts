import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import * as tf from '@tensorflow/tfjs';

/**
 * Student weights saved next to a release artifact so the next round can continue from them (warm
 * start) instead of from random init. Two files: `${base}.bin` (float32 little-endian, weights in
 * `model.getWeights()` order) and `${base}.json` (architecture and per-weight shapes). Loading only
 * happens when the architecture text and every shape match; otherwise the caller trains from scratch.
 */
export interface WeightsIndex {
  version: 1;
  arch: string;
  weights: { name: string; shape: number[] }[];
}

export type WarmStartResult = { loaded: true } | { loaded: false; reason: string };

/** The model's weights as one float32 array (`model.getWeights()` order) and the index that describes them. */
function weightsOf(model: tf.LayersModel, arch: string): { index: WeightsIndex; data: Float32Array } {
  const tensors = model.getWeights();
  const index: WeightsIndex = { version: 1, arch, weights: model.weights.map((w, i) => ({ name: w.originalName, shape: tensors[i]!.shape })) };
  const total = tensors.reduce((a, t) => a + t.size, 0);
  const data = new Float32Array(total);
  let off = 0;
  for (const t of tensors) {
    data.set(t.dataSync() as Float32Array, off);
    off += t.size;
  }
  return { index, data };
}

export async function saveWeights(model: tf.LayersModel, base: string, arch: string): Promise<void> {
  const { index, data } = weightsOf(model, arch);
  await mkdir(dirname(base), { recursive: true });
  // Write the data before the index: an index without its data never exists.
  for (const [file, bytes] of [
    [`${base}.bin`, new Uint8Array(data.buffer)],
    [`${base}.json`, Buffer.from(JSON.stringify(index))],
  ] as const) {
    const tmp = `${file}.${process.pid}.tmp`;
    await writeFile(tmp, bytes);
    await rename(tmp, file);
  }
}

/**
 * The same two parts in one blob, for the artifact store (issue 15: a round on another replica warm-starts from
 * it): a 4-byte little-endian index length, the index JSON, then the float32 data.
 */
export function packWeights(model: tf.LayersModel, arch: string): Uint8Array {
  const { index, data } = weightsOf(model, arch);
  const json = Buffer.from(JSON.stringify(index));
  const out = new Uint8Array(4 + json.byteLength + data.byteLength);
  new DataView(out.buffer).setUint32(0, json.byteLength, true);
  out.set(json, 4);
  out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), 4 + json.byteLength);
  return out;
}

/** Loads packed weights (packWeights) into `model` when compatible; never throws for malformed or mismatching bytes. */
export function loadPackedWeightsInto(model: tf.LayersModel, packed: Uint8Array, arch: string): WarmStartResult {
  const n = packed.byteLength >= 4 ? new DataView(packed.buffer, packed.byteOffset, packed.byteLength).getUint32(0, true) : -1;
  if (n < 0 || 4 + n > packed.byteLength) return { loaded: false, reason: `parent weights blob is malformed (${packed.byteLength} bytes, index length ${n})` };
  let index: WeightsIndex;
  try {
    index = JSON.parse(Buffer.from(packed.subarray(4, 4 + n)).toString('utf8')) as WeightsIndex;
  } catch {
    return { loaded: false, reason: 'parent weights index is not JSON' };
  }
  return applyWeights(model, index, packed.subarray(4 + n), arch);
}

/** Loads saved weights into `model` when compatible; never throws for a missing or mismatching file. */
export async function loadWeightsInto(model: tf.LayersModel, base: string, arch: string): Promise<WarmStartResult> {
  let index: WeightsIndex;
  let buf: Buffer;
  try {
    index = JSON.parse(await readFile(`${base}.json`, 'utf8')) as WeightsIndex;
    buf = await readFile(`${base}.bin`);
  } catch (err) {
    return { loaded: false, reason: `parent weights unavailable (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})` };
  }
  return applyWeights(model, index, buf, arch);
}

function applyWeights(model: tf.LayersModel, index: WeightsIndex, buf: Uint8Array, arch: string): WarmStartResult {
  if (index?.version !== 1 || !Array.isArray(index.weights)) return { loaded: false, reason: 'parent weights index has an unknown format' };
  if (index.arch !== arch) return { loaded: false, reason: `architecture changed (${index.arch} → ${arch})` };
  const current = model.getWeights();
  if (current.length !== index.weights.length) return { loaded: false, reason: `parent has ${index.weights.length} weight tensors, model has ${current.length}` };
  for (let i = 0; i < current.length; i++) {
    const want = current[i]!.shape;
    const have = index.weights[i]!.shape;
    if (want.length !== have.length || want.some((d, k) => d !== have[k])) {
      return { loaded: false, reason: `weight ${i} (${index.weights[i]!.name}) has shape [${have}], model needs [${want}]` };
    }
  }
  const total = current.reduce((a, t) => a + t.size, 0);
  if (buf.byteLength !== total * 4) return { loaded: false, reason: `parent weights file has ${buf.byteLength} bytes, expected ${total * 4}` };
  const data = new Float32Array(total);
  new Uint8Array(data.buffer).set(buf);
  let off = 0;
  const tensors = current.map((t) => {
    const out = tf.tensor(data.subarray(off, off + t.size), t.shape, 'float32');
    off += t.size;
    return out;
  });
  model.setWeights(tensors);
  tf.dispose(tensors);
  return { loaded: true };
}
