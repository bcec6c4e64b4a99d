import { z } from 'zod';
import type { Manifest } from '../../shared/protocol/index.js';
import { ApiError, badRequest, invalidBody } from './errors.js';
import { fastSingleInput } from './fast-input.js';

/**
 * `POST /v1/predict` request decoding: the hot path of the edge. zod checks the body's structure (which
 * keys, their types); the up-to-a-million numbers are checked by a tight loop straight into the
 * Float32Array fed to ORT, never element by element through zod.
 */

// O(1) for any length: zod must not walk the 784 numbers.
const anyArray = z.custom<unknown[]>((v) => Array.isArray(v), { error: 'expected an array' });

export const predictBodySchema = z.strictObject({
  /** One example, as numbers. */
  input: anyArray.optional(),
  /** Several examples, each an array of numbers. */
  inputs: anyArray.optional(),
  /** Base64 of the examples' bytes: little-endian float32 or uint8 pixels, `count` examples back to back. */
  input_b64: z.string().optional(),
  encoding: z.enum(['float32', 'uint8']).optional(),
  count: z.number().int().min(1).optional(),
  /** Numbers (JSON or float32 base64) are raw and get `manifest.input.scaling`; uint8 is always raw. */
  raw: z.boolean().optional(),
  /** One PNG or JPEG, base64 (image models only; see image.ts). */
  image_b64: z.string().optional(),
  /** Several PNG or JPEG images, each base64. */
  images_b64: anyArray.optional(),
  /** Answer the k most likely classes instead of all probabilities. */
  top_k: z.number().int().min(1).optional(),
});
export type PredictBody = z.infer<typeof predictBodySchema>;

export interface DecodedPredict {
  /** n × inputSize model inputs, scaled. */
  data: Float32Array;
  n: number;
  /** The request named one example (`input`, or `input_b64` without `count`): answer one object. */
  single: boolean;
  topK: number | undefined;
  /** Images still to decode into `data` (image.ts `decodeImages`), with the field naming each. */
  images?: { bytes: Uint8Array[]; fields: string[] };
}

export interface DecodeLimits {
  maxBatch: number;
}

// Largest finite float32: doubles beyond it become Infinity once stored.
const F32_MAX = 3.4028234663852886e38;
const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

function tooMany(field: string, n: number, max: number): ApiError {
  return new ApiError(413, 'batch_too_large', `${n} examples exceed the limit of ${max} per request`, field);
}

/** Copies JSON numbers into `out` at `at`, scaling if raw; rejects non-numbers and non-finite float32 values. */
function fillNumbers(src: unknown[], out: Float32Array, at: number, field: string, scale: number, offset: number, raw: boolean): void {
  for (let i = 0; i < src.length; i++) {
    const v = src[i];
    if (typeof v !== 'number') throw badRequest(`expected a number, got ${v === null ? 'null' : typeof v}`, `${field}.${i}`, 'invalid_input');
    const x = raw ? v * scale + offset : v;
    // One comparison rejects NaN, ±Infinity (JSON.parse turns 1e999 into Infinity) and float32 overflow.
    if (!(x >= -F32_MAX && x <= F32_MAX)) throw badRequest(`value ${v} is not a finite float32${raw ? ' after scaling' : ''}`, `${field}.${i}`, 'invalid_input');
    out[at + i] = x;
  }
}

function decodedLength(b64: string): number {
  if (b64.length % 4 !== 0 || !BASE64_RE.test(b64)) return -1;
  const pad = b64.endsWith('==') ? 2 : b64.endsWith('=') ? 1 : 0;
  return (b64.length / 4) * 3 - pad;
}

function decodeBase64(body: PredictBody, b64: string, size: number, manifest: Manifest, limits: DecodeLimits): DecodedPredict {
  if (body.encoding === undefined) throw badRequest('encoding is required with input_b64 ("float32" or "uint8")', 'encoding');
  const n = body.count ?? 1;
  if (n > limits.maxBatch) throw tooMany('count', n, limits.maxBatch);
  const bytes = decodedLength(b64);
  if (bytes < 0) throw badRequest('not canonical base64 (A-Z a-z 0-9 + / with = padding)', 'input_b64', 'invalid_input');
  const { scale, offset } = manifest.input.scaling;
  const total = n * size;
  const data = new Float32Array(total);
  if (body.encoding === 'float32') {
    if (bytes !== total * 4) throw badRequest(`decodes to ${bytes} bytes; ${n} float32 example(s) of ${size} values need ${total * 4}`, 'input_b64', 'invalid_input');
    // Decode straight into the tensor's (aligned) buffer: no intermediate copy.
    Buffer.from(data.buffer).write(b64, 'base64');
    const raw = body.raw === true;
    for (let i = 0; i < total; i++) {
      const x = raw ? data[i]! * scale + offset : data[i]!;
      if (!(x >= -F32_MAX && x <= F32_MAX)) throw badRequest(`value ${i} is not a finite float32`, 'input_b64', 'invalid_input');
      data[i] = x;
    }
  } else {
    if (body.raw === false) throw badRequest('uint8 input is always raw pixels; drop "raw": false', 'raw');
    if (bytes !== total) throw badRequest(`decodes to ${bytes} bytes; ${n} uint8 example(s) of ${size} values need ${total}`, 'input_b64', 'invalid_input');
    const px = Buffer.from(b64, 'base64');
    for (let i = 0; i < total; i++) data[i] = px[i]! * scale + offset;
  }
  return { data, n, single: body.count === undefined, topK: body.top_k };
}

/** Base64 images, checked and decoded to bytes; the pixels are decoded later (image.ts, asynchronous). */
function imagesOf(body: PredictBody, limits: DecodeLimits): DecodedPredict {
  if (body.raw !== undefined) throw badRequest('raw does not apply to images (the manifest normalises them)', 'raw', 'invalid_body');
  const single = body.image_b64 !== undefined;
  const items: unknown[] = single ? [body.image_b64] : body.images_b64!;
  const field = single ? 'image_b64' : 'images_b64';
  if (items.length === 0) throw badRequest('expected at least one image', field, 'invalid_input');
  if (items.length > limits.maxBatch) throw tooMany(field, items.length, limits.maxBatch);
  const fields = items.map((_, i) => (single ? field : `${field}.${i}`));
  const bytes = items.map((b64, i) => {
    if (typeof b64 !== 'string' || decodedLength(b64) <= 0) throw badRequest('expected an image as canonical base64 (A-Z a-z 0-9 + / with = padding)', fields[i], 'invalid_input');
    return new Uint8Array(Buffer.from(b64, 'base64'));
  });
  return { data: new Float32Array(0), n: items.length, single, topK: body.top_k, images: { bytes, fields } };
}

/**
 * Turns a parsed JSON body into model inputs for `manifest`, or throws ApiError: 400 naming the field
 * (wrong length, non-finite number, bad base64, wrong type), 413 `batch_too_large` past `maxBatch`.
 */
export function decodePredict(json: unknown, manifest: Manifest, limits: DecodeLimits): DecodedPredict {
  const parsed = predictBodySchema.safeParse(json);
  if (!parsed.success) throw invalidBody(parsed.error);
  const body = parsed.data;
  const forms = [body.input, body.inputs, body.input_b64, body.image_b64, body.images_b64].filter((f) => f !== undefined).length;
  if (forms !== 1) throw badRequest('exactly one of input, inputs, input_b64, image_b64, images_b64 is required', forms === 0 ? 'input' : undefined, 'invalid_body');
  if (body.input_b64 === undefined && (body.encoding !== undefined || body.count !== undefined)) {
    throw badRequest('encoding and count only apply to input_b64', body.encoding !== undefined ? 'encoding' : 'count', 'invalid_body');
  }
  if (body.top_k !== undefined && body.top_k > manifest.output.classes) {
    throw badRequest(`top_k must be at most ${manifest.output.classes}`, 'top_k', 'invalid_body');
  }
  if (body.image_b64 !== undefined || body.images_b64 !== undefined) return imagesOf(body, limits);
  const size = manifest.input.shape.reduce((a, b) => a * b, 1);
  if (body.input_b64 !== undefined) return decodeBase64(body, body.input_b64, size, manifest, limits);

  const { scale, offset } = manifest.input.scaling;
  const raw = body.raw === true;
  if (body.input !== undefined) {
    if (body.input.length !== size) throw badRequest(`expected ${size} numbers, got ${body.input.length}`, 'input', 'invalid_input');
    const data = new Float32Array(size);
    fillNumbers(body.input, data, 0, 'input', scale, offset, raw);
    return { data, n: 1, single: true, topK: body.top_k };
  }
  const rows = body.inputs!;
  if (rows.length === 0) throw badRequest('expected at least one example', 'inputs', 'invalid_input');
  if (rows.length > limits.maxBatch) throw tooMany('inputs', rows.length, limits.maxBatch);
  const data = new Float32Array(rows.length * size);
  for (let r = 0; r < rows.length; r++) {
    const row = rows[r];
    if (!Array.isArray(row)) throw badRequest(`expected an array of ${size} numbers`, `inputs.${r}`, 'invalid_input');
    if (row.length !== size) throw badRequest(`expected ${size} numbers, got ${row.length}`, `inputs.${r}`, 'invalid_input');
    fillNumbers(row, data, r * size, `inputs.${r}`, scale, offset, raw);
  }
  return { data, n: rows.length, single: false, topK: body.top_k };
}

// Like c.req.text(): invalid UTF-8 becomes U+FFFD, a leading BOM is dropped.
const utf8 = new TextDecoder();

/**
 * Decodes a raw `POST /v1/predict` body: the `{"input":[…]}` fast path when it applies (see
 * fast-input.ts), else JSON.parse (400 `invalid_json`) and `decodePredict`.
 */
export function decodePredictBody(bytes: Uint8Array, manifest: Manifest, limits: DecodeLimits): DecodedPredict {
  const fast = fastSingleInput(bytes, manifest.input.shape.reduce((a, b) => a * b, 1));
  if (fast) return { data: fast, n: 1, single: true, topK: undefined };
  let json: unknown;
  try {
    json = JSON.parse(utf8.decode(bytes));
  } catch (err) {
    throw new ApiError(400, 'invalid_json', `body is not valid JSON: ${(err as Error).message.slice(0, 200)}`);
  }
  return decodePredict(json, manifest, limits);
}
