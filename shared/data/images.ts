import { readdir, readFile } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { ImageError, imageShape, imageSize, inspectImage, preprocessImage } from '../image/preprocess.js';
import type { ImageSpec } from '../protocol/schemas.js';
import { DatasetError, IDENTITY_SCALING, selectIndices, type Dataset, type LoadOptions, type Scaling } from './dataset.js';

/**
 * `images:DIR`: one folder per class (the ImageFolder layout: DIR/<label>/<image>.png|jpg|jpeg), the
 * folder names are the labels, in code-point order (as torchvision sorts them). Hidden entries
 * (a leading dot) are skipped; any other file or an empty class folder is an error, so a typo in the
 * layout never silently drops a class.
 *
 * Each image goes through the same preprocessing as on a device (shared/image/preprocess.ts). With
 * `options.image` (the model's input.image) every image is resized to it; without, the first image
 * sets the size (1 channel if it is grey, else 3; nhwc; mean 0, std 1) and every image must match it.
 */

export const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg'];
/** Cloud side: larger than the edge's default, still bounded (a 50 MP image decodes to 150 MB of RGB). */
export const DATASET_MAX_PIXELS = 50_000_000;

export interface ImagesLoadOptions extends LoadOptions {
  source?: string;
  maxPixels?: number;
}

async function entries(dir: string) {
  try {
    return (await readdir(dir, { withFileTypes: true })).filter((e) => !e.name.startsWith('.'));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new DatasetError('directory not found', dir);
    if (code === 'ENOTDIR') throw new DatasetError('is a file, expected a directory of class folders', dir);
    throw new DatasetError(`cannot read directory (${code ?? (err as Error).message})`, dir);
  }
}

/** The (file, label) list of an ImageFolder tree, labels in code-point order. */
export async function listImageFolder(dir: string): Promise<{ files: string[]; labels: Int32Array; labelNames: string[] }> {
  const top = await entries(dir);
  const stray = top.find((e) => !e.isDirectory());
  if (stray) throw new DatasetError(`unexpected file "${stray.name}": expected only class folders (DIR/<label>/<image>.png|jpg|jpeg)`, dir);
  const labelNames = top.map((e) => e.name).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  if (labelNames.length < 2) throw new DatasetError(`found ${labelNames.length} class folder(s); a classifier needs at least 2 (DIR/<label>/<image>.png|jpg|jpeg)`, dir);
  const files: string[] = [];
  const labels: number[] = [];
  for (const [k, name] of labelNames.entries()) {
    const classDir = join(dir, name);
    const inside = (await entries(classDir)).map((e) => ({ e, ext: extname(e.name).toLowerCase() }));
    const bad = inside.find(({ e, ext }) => !e.isFile() || !IMAGE_EXTENSIONS.includes(ext));
    if (bad) throw new DatasetError(`unexpected ${bad.e.isFile() ? 'file' : 'entry'} "${bad.e.name}": class folders hold only ${IMAGE_EXTENSIONS.join(', ')} images`, classDir);
    if (inside.length === 0) throw new DatasetError('empty class folder', classDir);
    for (const { e } of inside.sort((a, b) => (a.e.name < b.e.name ? -1 : 1))) {
      files.push(join(classDir, e.name));
      labels.push(k);
    }
  }
  return { files, labels: Int32Array.from(labels), labelNames };
}

/** One scaling when every channel shares mean and std (then raw uint8 pixels map exactly); else identity. */
function scalingOf(spec: ImageSpec): Scaling {
  const uniform = spec.mean.every((m) => m === spec.mean[0]) && spec.std.every((s) => s === spec.std[0]);
  // (0 - m / s): an all-zero mean gives offset 0, not -0.
  return uniform ? { scale: 1 / (255 * spec.std[0]!), offset: 0 - spec.mean[0]! / spec.std[0]! } : { ...IDENTITY_SCALING };
}

async function readImage(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    throw new DatasetError(`cannot read image (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, file);
  }
}

export async function loadImages(dir: string, options: ImagesLoadOptions = {}): Promise<Dataset> {
  const list = await listImageFolder(dir);
  const idx = selectIndices(list.files.length, options) ?? Uint32Array.from(list.files.keys());
  const maxPixels = options.maxPixels ?? DATASET_MAX_PIXELS;
  let spec = options.image;
  let fixed: { width: number; height: number } | undefined;
  if (!spec && idx.length > 0) {
    const first = list.files[idx[0]!]!;
    const bytes = await readImage(first);
    try {
      const h = await inspectImage(bytes, { maxPixels });
      const channels = h.grey ? 1 : 3;
      spec = { height: h.height, width: h.width, channels, layout: 'nhwc', mean: Array(channels).fill(0), std: Array(channels).fill(1) };
      fixed = h;
    } catch (err) {
      throw err instanceof ImageError ? new DatasetError(err.message, first) : err;
    }
  }
  spec ??= { height: 1, width: 1, channels: 1, layout: 'nhwc', mean: [0], std: [1] };
  const size = imageSize(spec);
  const features = new Float32Array(idx.length * size);
  const labels = new Int32Array(idx.length);
  for (let k = 0; k < idx.length; k++) {
    const file = list.files[idx[k]!]!;
    const bytes = await readImage(file);
    try {
      if (fixed) {
        const h = await inspectImage(bytes, { maxPixels });
        if (h.width !== fixed.width || h.height !== fixed.height) {
          throw new DatasetError(`is ${h.width}×${h.height}, but the first image is ${fixed.width}×${fixed.height}; give the model's input.image to resize them all`, file);
        }
      }
      await preprocessImage(bytes, spec, { maxPixels }, features, k * size);
    } catch (err) {
      throw err instanceof ImageError ? new DatasetError(err.message, file) : err;
    }
    labels[k] = list.labels[idx[k]!]!;
  }
  return {
    source: options.source ?? `images:${dir}`,
    count: idx.length,
    shape: options.imageShape === 'flat' ? [size] : imageShape(spec),
    features,
    labels,
    labelNames: list.labelNames,
    numClasses: list.labelNames.length,
    scaling: scalingOf(spec),
  };
}
