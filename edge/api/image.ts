import type { MiddlewareHandler } from 'hono';
import { header, mediaType } from '../../shared/http/middleware.js';
import { ImageError, imageSize, preprocessImage, type ImageFormat } from '../../shared/image/preprocess.js';
import type { Logger } from '../../shared/log/index.js';
import type { Manifest } from '../../shared/protocol/index.js';
import type { ApiMetrics } from './metrics.js';
import type { DecodedPredict } from './decode.js';
import { ApiError, badRequest } from './errors.js';

/**
 * Image inputs of `POST /v1/predict` (issue 11): a PNG or JPEG body (`Content-Type: image/png` or
 * `image/jpeg`, one image, `?top_k=K` optional), or base64 images in JSON (`image_b64`, `images_b64`,
 * see decode.ts). Each is decoded on the device and preprocessed by the manifest's `input.image`
 * (shared/image/preprocess.ts). A bad image is a 400 naming why, never a crash: `wrong_image_type`,
 * `undecodable_image`, `too_many_pixels`; a model without an image form answers `not_an_image_model`.
 */

const IMAGE_TYPES: Record<string, ImageFormat> = { 'image/png': 'png', 'image/jpeg': 'jpeg' };

/** What image decoding needs of the API context. */
export interface ImageDeps {
  limits: {
    /** Largest width × height decoded (judged on the header, before decoding). */
    maxImagePixels: number;
  };
  log: Logger;
  metrics: Pick<ApiMetrics, 'image'>;
}

/** The format a media type names, if it is an image type the API takes. */
export const imageFormatOf = (mt: string): ImageFormat | undefined => IMAGE_TYPES[mt];

/**
 * Accepts `application/json`, `image/png` and `image/jpeg` bodies; anything else is 415 naming the three.
 *
 * @example
 * app.post('/v1/predict', jsonOrImage(), handler);
 */
export function jsonOrImage(): MiddlewareHandler {
  return function jsonOrImage(c, next) {
    const ct = header(c, 'content-type');
    const mt = mediaType(ct);
    if (mt !== 'application/json' && imageFormatOf(mt) === undefined) {
      const got = ct === undefined ? 'none' : JSON.stringify(ct.slice(0, 100));
      throw new ApiError(415, 'unsupported_media_type', `expected Content-Type application/json, image/png or image/jpeg, got ${got}`);
    }
    return next();
  };
}

const ERROR_CODES = { undecodable: 'undecodable_image', too_many_pixels: 'too_many_pixels', wrong_type: 'wrong_image_type' } as const;

/** Refusals are answered, logged and counted by reason (apprentice_edge_images_total{outcome}). */
function refused(err: unknown, field: string, { log, metrics }: ImageDeps): never {
  if (err instanceof ImageError) {
    metrics.image(err.code);
    log.info({ reason: err.code, field }, 'edge/api image refused');
    throw badRequest(err.message, field, ERROR_CODES[err.code]);
  }
  throw err;
}

function imageSpecOf(manifest: Manifest) {
  const spec = manifest.input.image;
  if (!spec) throw new ApiError(400, 'not_an_image_model', `model ${manifest.model} release ${manifest.release} takes numbers (its manifest has no input.image); send JSON input`);
  return spec;
}

/** Decodes `images` into one batch of model inputs; the field names the offending image (`images_b64.3`). */
export async function decodeImages(images: Uint8Array[], fields: string[], manifest: Manifest, deps: ImageDeps): Promise<Float32Array> {
  const spec = imageSpecOf(manifest);
  const size = imageSize(spec);
  const data = new Float32Array(images.length * size);
  // One at a time: sharp runs one libvips thread, and a batch in parallel would hold every decoded image at once.
  for (let i = 0; i < images.length; i++) {
    try {
      await preprocessImage(images[i]!, spec, { maxPixels: deps.limits.maxImagePixels }, data, i * size);
    } catch (err) {
      refused(err, fields[i]!, deps);
    }
    deps.metrics.image('decoded');
  }
  return data;
}

/** A PNG/JPEG request body → one model input; `top_k` comes from the query string. */
export async function decodeImageBody(bytes: Uint8Array, format: ImageFormat, topK: string | undefined, manifest: Manifest, deps: ImageDeps): Promise<DecodedPredict> {
  let k: number | undefined;
  if (topK !== undefined) {
    k = Number(topK);
    if (!/^\d+$/.test(topK) || k < 1 || k > manifest.output.classes) throw badRequest(`top_k must be an integer 1..${manifest.output.classes}, got ${JSON.stringify(topK.slice(0, 20))}`, 'top_k', 'invalid_body');
  }
  const spec = imageSpecOf(manifest);
  try {
    const data = await preprocessImage(bytes, spec, { maxPixels: deps.limits.maxImagePixels, expect: format });
    deps.metrics.image('decoded');
    return { data, n: 1, single: true, topK: k };
  } catch (err) {
    refused(err, 'body', deps);
  }
}
