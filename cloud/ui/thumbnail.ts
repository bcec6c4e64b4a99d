import sharp from 'sharp';
import type { InputSpec } from '../../shared/protocol/schemas.js';

/** Largest input drawn (H·W·C values): a thumbnail of anything bigger is not worth the CPU. */
export const MAX_THUMB_VALUES = 1024 * 1024;

/** How a stored input tensor is laid out as an image, or why it is not one. */
export function imageGeometry(spec: InputSpec): { height: number; width: number; channels: 1 | 3; layout: 'nhwc' | 'nchw' } | undefined {
  if (spec.image) return spec.image;
  // No image spec: a flat square or [H, W] / [H, W, 1] input is drawn as greyscale (MNIST-like).
  const dims = spec.shape.filter((d) => d !== 1);
  const n = spec.shape.reduce((a, b) => a * b, 1);
  if (dims.length === 2) return { height: dims[0]!, width: dims[1]!, channels: 1, layout: 'nhwc' };
  const side = Math.round(Math.sqrt(n));
  if (dims.length === 1 && side * side === n && side >= 4) return { height: side, width: side, channels: 1, layout: 'nhwc' };
  return undefined;
}

/**
 * A stored example input (float32 little-endian, as the model saw it) drawn as a PNG. With an image spec
 * (issue 11) the normalisation is inverted exactly: pixel = (x · std + mean) · 255, per channel, in the
 * spec's layout. Without one, the values are stretched min → 0, max → 255. undefined: not an image, or
 * the bytes do not match the spec (the caller answers 404/422, never a broken image).
 */
export async function inputThumbnail(input: Buffer, spec: InputSpec, size = 96, source?: Buffer | null): Promise<Buffer | undefined> {
  // The source image the device received (issue 11), when stored and readable: what the camera saw.
  if (source) {
    const fromSource = await sharp(source, { failOn: 'warning', limitInputPixels: MAX_THUMB_VALUES })
      .resize(size, size, { fit: 'contain', background: { r: 0, g: 0, b: 0, alpha: 1 } })
      .removeAlpha()
      .png()
      .toBuffer()
      .catch(() => undefined);
    if (fromSource) return fromSource;
  }
  const g = imageGeometry(spec);
  if (!g) return undefined;
  const n = g.height * g.width * g.channels;
  if (n > MAX_THUMB_VALUES || input.byteLength !== n * 4) return undefined;
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = input.readFloatLE(i * 4);
  const px = Buffer.alloc(n);
  const img = spec.image;
  let lo = Infinity;
  let hi = -Infinity;
  if (!img) for (const v of x) if (Number.isFinite(v)) (lo = Math.min(lo, v)), (hi = Math.max(hi, v));
  for (let y = 0; y < g.height; y++) {
    for (let col = 0; col < g.width; col++) {
      for (let c = 0; c < g.channels; c++) {
        const src = g.layout === 'nhwc' ? (y * g.width + col) * g.channels + c : c * g.height * g.width + y * g.width + col;
        const v = x[src]!;
        const p = img ? (v * img.std[c]! + img.mean[c]!) * 255 : hi > lo ? ((v - lo) / (hi - lo)) * 255 : 0;
        px[(y * g.width + col) * g.channels + c] = Math.max(0, Math.min(255, Math.round(Number.isFinite(p) ? p : 0)));
      }
    }
  }
  const img2 = sharp(px, { raw: { width: g.width, height: g.height, channels: g.channels } })
    .resize(size, size, { fit: 'contain', kernel: 'nearest', background: { r: 0, g: 0, b: 0, alpha: 1 } })
    .removeAlpha();
  return (g.channels === 1 ? img2.toColourspace('b-w') : img2).png().toBuffer();
}
