import { writeFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import { DatasetError, selectIndices, type Dataset, type LoadOptions, type Scaling } from './dataset.js';
import { readDataFile } from './io.js';

/**
 * IDX (the MNIST / Fashion-MNIST / KMNIST container): magic 00 00 <type> <ndims>, then ndims
 * big-endian uint32 dimensions, then the data row-major. Only type 0x08 (unsigned byte) is
 * supported: it is what every image/label set in this family uses, and the 1/255 scaling
 * the edge reproduces assumes raw bytes.
 */
const UBYTE = 0x08;

export interface IdxArray {
  dims: number[];
  data: Uint8Array;
}

/** MNIST pixels in [0, 255] -> model inputs in [0, 1]. */
export const IDX_DEFAULT_SCALING: Readonly<Scaling> = Object.freeze({ scale: 1 / 255, offset: 0 });

/** Parses an (already gunzipped) IDX buffer; `file` is only used in error messages. No copy of the data is made. */
export function parseIdx(buf: Uint8Array, file: string): IdxArray {
  if (buf.length === 0) throw new DatasetError('empty file', file);
  if (buf.length < 4) throw new DatasetError(`truncated: ${buf.length} bytes is too short for an IDX header`, file);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const magic = view.getUint32(0);
  const type = buf[2]!;
  const ndims = buf[3]!;
  if (buf[0] !== 0 || buf[1] !== 0 || ndims === 0) {
    throw new DatasetError(`wrong magic number 0x${hex(magic)}: not an IDX file (expected 0x000008NN)`, file);
  }
  if (type !== UBYTE) {
    throw new DatasetError(`wrong magic number 0x${hex(magic)}: IDX data type 0x${type.toString(16).padStart(2, '0')} is not supported (only unsigned byte, 0x08)`, file);
  }
  const headerLen = 4 + 4 * ndims;
  if (buf.length < headerLen) {
    throw new DatasetError(`truncated: header declares ${ndims} dimensions but the file is only ${buf.length} bytes`, file);
  }
  const dims: number[] = [];
  for (let i = 0; i < ndims; i++) dims.push(view.getUint32(4 + 4 * i));
  const expected = dims.reduce((a, b) => a * b, 1);
  const actual = buf.length - headerLen;
  if (actual < expected) {
    throw new DatasetError(`truncated: header says ${dims.join(' x ')} (${expected} bytes of data) but only ${actual} bytes follow`, file);
  }
  if (actual > expected) {
    // Extra bytes usually mean the header was misread or two files were concatenated; refuse rather than guess.
    throw new DatasetError(`${actual - expected} unexpected trailing bytes after ${dims.join(' x ')} data`, file);
  }
  return { dims, data: buf.subarray(headerLen, headerLen + expected) };
}

export async function readIdx(file: string): Promise<IdxArray> {
  return parseIdx(await readDataFile(file), file);
}

export interface IdxLoadOptions extends LoadOptions {
  /** Dataset.source; defaults to the `idx:` spec for the files. */
  source?: string;
  labelNames?: string[];
  /** Known class count; labels >= it are rejected. Default: max label + 1. */
  numClasses?: number;
}

/** Loads an IDX image file and optional IDX label file (first dimension = example count in both). */
export async function loadIdx(imagesFile: string, labelsFile: string | undefined, options: IdxLoadOptions = {}): Promise<Dataset> {
  const [images, labelArr] = await Promise.all([readIdx(imagesFile), labelsFile === undefined ? undefined : readIdx(labelsFile)]);
  const count = images.dims[0]!;
  const shape = imageShape(images.dims, options.imageShape ?? 'flat', imagesFile);

  let allLabels: Uint8Array | undefined;
  let numClasses: number | undefined;
  if (labelArr && labelsFile !== undefined) {
    if (labelArr.dims.length !== 1) {
      throw new DatasetError(`a label file must have 1 dimension, got ${labelArr.dims.length} (${labelArr.dims.join(' x ')}); is it an image file?`, labelsFile);
    }
    if (labelArr.dims[0] !== count) {
      throw new DatasetError(`image and label counts differ: ${imagesFile} has ${count} images but ${labelsFile} has ${labelArr.dims[0]} labels`);
    }
    allLabels = labelArr.data;
    // Computed over the whole file, so a limit doesn't shrink the class count.
    let max = -1;
    for (let i = 0; i < allLabels.length; i++) {
      const v = allLabels[i]!;
      if (v > max) max = v;
      if (options.numClasses !== undefined && v >= options.numClasses) {
        throw new DatasetError(`label out of range: item ${i} has label ${v}, expected 0..${options.numClasses - 1}`, labelsFile);
      }
    }
    numClasses = options.numClasses ?? max + 1;
  }

  const size = shape.reduce((a, b) => a * b, 1);
  const scaling = options.scaling ?? IDX_DEFAULT_SCALING;
  // A 256-entry table makes conversion one load per pixel and guarantees every pixel value maps
  // exactly as the edge computes raw * scale + offset (in float64, rounded to float32).
  const lut = new Float32Array(256);
  for (let v = 0; v < 256; v++) lut[v] = v * scaling.scale + scaling.offset;

  const idx = selectIndices(count, options);
  const n = idx ? idx.length : count;
  const raw = images.data;
  const features = new Float32Array(n * size);
  const labels = allLabels ? new Int32Array(n) : undefined;
  if (idx === null) {
    for (let i = 0; i < features.length; i++) features[i] = lut[raw[i]!]!;
    if (labels && allLabels) labels.set(allLabels);
  } else {
    for (let k = 0; k < n; k++) {
      const src = idx[k]! * size;
      const dst = k * size;
      for (let j = 0; j < size; j++) features[dst + j] = lut[raw[src + j]!]!;
      if (labels && allLabels) labels[k] = allLabels[idx[k]!]!;
    }
  }

  const ds: Dataset = {
    source: options.source ?? `idx:${labelsFile === undefined ? imagesFile : `${imagesFile},${labelsFile}`}`,
    count: n,
    shape,
    features,
    scaling: { scale: scaling.scale, offset: scaling.offset },
  };
  if (labels) {
    ds.labels = labels;
    ds.numClasses = numClasses!;
    if (options.labelNames) ds.labelNames = [...options.labelNames];
  }
  return ds;
}

function imageShape(dims: number[], mode: 'flat' | 'hwc', file: string): number[] {
  const perExample = dims.slice(1);
  if (perExample.length === 0) {
    throw new DatasetError(`an image file needs at least 2 dimensions (count x pixels), got 1; is it a label file?`, file);
  }
  if (mode === 'flat') return [perExample.reduce((a, b) => a * b, 1)];
  if (perExample.length === 2) return [perExample[0]!, perExample[1]!, 1];
  if (perExample.length === 3) return perExample;
  throw new DatasetError(`imageShape 'hwc' needs count x rows x cols [x channels] images, got ${dims.join(' x ')}`, file);
}

/** Encodes unsigned bytes as an IDX buffer. `dims[0]` is the item count. */
export function encodeIdx(dims: number[], data: Uint8Array): Buffer {
  const expected = dims.reduce((a, b) => a * b, 1);
  if (dims.length === 0 || dims.length > 255) throw new RangeError(`encodeIdx: need 1..255 dimensions, got ${dims.length}`);
  if (data.length !== expected) throw new RangeError(`encodeIdx: dims ${dims.join(' x ')} need ${expected} bytes, got ${data.length}`);
  const out = Buffer.alloc(4 + 4 * dims.length + data.length);
  out[2] = UBYTE;
  out[3] = dims.length;
  dims.forEach((d, i) => out.writeUInt32BE(d, 4 + 4 * i));
  out.set(data, 4 + 4 * dims.length);
  return out;
}

/** Writes an IDX file (gzipped when `gzip` is set); used to produce fixtures and export raw datasets. */
export async function writeIdx(file: string, dims: number[], data: Uint8Array, { gzip = false }: { gzip?: boolean } = {}): Promise<void> {
  const buf = encodeIdx(dims, data);
  await writeFile(file, gzip ? gzipSync(buf) : buf);
}

function hex(n: number): string {
  return n.toString(16).padStart(8, '0');
}
