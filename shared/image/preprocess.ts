import type { ImageSpec } from '../protocol/schemas.js';

/**
 * Image preprocessing shared by the edge's local API and the `images:DIR` dataset loader, so a
 * device and the cloud turn the same file into the same tensor: decode (PNG or JPEG only), apply the
 * EXIF orientation, flatten transparency onto black, convert to the model's channels, resize to H×W
 * (scale to cover, centre crop: the aspect ratio is kept), then normalise per channel,
 * `x = (pixel / 255 − mean[c]) / std[c]`, into the spec's layout (nhwc or nchw).
 *
 * sharp (libvips) is imported lazily, on the first image: a daemon that never sees one never pays its
 * memory (see the README's edge memory figures). Its operation cache is off and it runs one libvips
 * thread: on a Pi the budget is memory, and the API serves one image per request.
 */

export type ImageFormat = 'png' | 'jpeg';
export const IMAGE_MEDIA_TYPES: Record<ImageFormat, string> = { png: 'image/png', jpeg: 'image/jpeg' };

/** Why an image was refused: the caller's fault, answered with a 400 naming it. */
export type ImageErrorCode = 'undecodable' | 'too_many_pixels' | 'wrong_type';

export class ImageError extends Error {
  override readonly name = 'ImageError';
  constructor(
    readonly code: ImageErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** 8-byte PNG signature (PNG spec §5.2) and the JPEG SOI marker followed by a marker's 0xFF. */
export function sniffImage(bytes: Uint8Array): ImageFormat | undefined {
  if (bytes.length >= 8 && bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47 && bytes[4] === 0x0d && bytes[5] === 0x0a && bytes[6] === 0x1a && bytes[7] === 0x0a) return 'png';
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return 'jpeg';
  return undefined;
}

type Sharp = typeof import('sharp').default;
let sharpModule: Promise<Sharp> | undefined;

/** sharp, imported on first use and configured for a small device: no operation cache, one thread. */
export function loadSharp(): Promise<Sharp> {
  sharpModule ??= import('sharp').then((m) => {
    const sharp = m.default;
    sharp.cache(false);
    sharp.concurrency(1);
    return sharp;
  });
  return sharpModule;
}

export interface PreprocessOptions {
  /** Largest width × height accepted, judged on the header before anything is decoded (decompression bombs). */
  maxPixels: number;
  /** The format the caller declared (Content-Type); a body of another format is refused. */
  expect?: ImageFormat;
}

/** Header facts of an accepted image: checked before it is decoded. */
export interface ImageHeader {
  format: ImageFormat;
  width: number;
  height: number;
  /** Grey (one colour channel, alpha aside) or colour, as stored. */
  grey: boolean;
}

/**
 * Reads and checks the header: a PNG or JPEG (by its bytes, not its name), of the declared format,
 * with at most `maxPixels` pixels. Throws ImageError.
 */
export async function inspectImage(bytes: Uint8Array, o: PreprocessOptions): Promise<ImageHeader> {
  const format = sniffImage(bytes);
  if (!format) throw new ImageError('wrong_type', 'not a PNG or JPEG image (unrecognised signature)');
  if (o.expect !== undefined && format !== o.expect) throw new ImageError('wrong_type', `the body is a ${format.toUpperCase()} image, but its type says ${IMAGE_MEDIA_TYPES[o.expect]}`);
  const sharp = await loadSharp();
  let meta: { width?: number; height?: number; channels?: number; space?: string; hasAlpha?: boolean };
  try {
    // The header only: no pixel is decoded here, so libvips' own limit is lifted to let us report the real dimensions.
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (err) {
    throw new ImageError('undecodable', `cannot read the ${format.toUpperCase()} header: ${(err as Error).message}`);
  }
  const { width, height } = meta;
  if (!width || !height) throw new ImageError('undecodable', `the ${format.toUpperCase()} header has no dimensions`);
  if (width * height > o.maxPixels) throw new ImageError('too_many_pixels', `${width}×${height} = ${width * height} pixels exceeds the limit of ${o.maxPixels}`);
  const colour = (meta.channels ?? 3) - (meta.hasAlpha ? 1 : 0);
  return { format, width, height, grey: colour === 1 || meta.space === 'b-w' };
}

/**
 * One image → `spec.height × spec.width × spec.channels` normalised floats in the spec's layout,
 * written into `out` at `at` (a new array when `out` is omitted). Throws ImageError for bad images.
 */
export async function preprocessImage(bytes: Uint8Array, spec: ImageSpec, o: PreprocessOptions, out?: Float32Array, at = 0): Promise<Float32Array> {
  const header = await inspectImage(bytes, o);
  const sharp = await loadSharp();
  const { height: H, width: W, channels: C } = spec;
  let pixels: Buffer;
  try {
    // failOn 'warning': a truncated file is an error, not a half-grey image. limitInputPixels re-checks
    // the header bound inside libvips.
    let pipe = sharp(bytes, { failOn: 'warning', limitInputPixels: o.maxPixels, sequentialRead: true }).autoOrient().flatten({ background: '#000000' });
    pipe = C === 1 ? pipe.toColourspace('b-w') : pipe.toColourspace('srgb');
    const r = await pipe.resize(W, H, { fit: 'cover', position: 'centre' }).raw().toBuffer({ resolveWithObject: true });
    if (r.info.channels !== C || r.info.width !== W || r.info.height !== H) {
      throw new Error(`decoded to ${r.info.width}×${r.info.height}×${r.info.channels}, expected ${W}×${H}×${C}`);
    }
    pixels = r.data;
  } catch (err) {
    throw new ImageError('undecodable', `cannot decode the ${header.format.toUpperCase()} image: ${(err as Error).message}`);
  }
  const dst = out ?? new Float32Array(H * W * C);
  const scale = spec.std.map((s) => 1 / (255 * s));
  const shift = spec.mean.map((m, c) => -m / spec.std[c]!);
  const plane = H * W;
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < C; c++) {
      const v = pixels[p * C + c]! * scale[c]! + shift[c]!;
      dst[at + (spec.layout === 'nhwc' ? p * C + c : c * plane + p)] = v;
    }
  }
  return dst;
}

/** Values per image for a spec. */
export const imageSize = (spec: ImageSpec) => spec.height * spec.width * spec.channels;

/** The per-example tensor shape of an image spec (without the batch dimension). */
export const imageShape = (spec: ImageSpec): number[] => (spec.layout === 'nhwc' ? [spec.height, spec.width, spec.channels] : [spec.channels, spec.height, spec.width]);
