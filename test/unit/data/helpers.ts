import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Dataset } from '../../../shared/data/index.js';

/** A temp directory removed by the returned cleanup. */
export function tempDir(): { dir: string; path: (name: string) => string; write: (name: string, data: string | Uint8Array) => string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'apprentice-data-'));
  const path = (name: string): string => join(dir, name);
  return {
    dir,
    path,
    write: (name, data) => {
      writeFileSync(path(name), data);
      return path(name);
    },
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** A small labelled dataset whose example i has features [i, i+0.5] and label i % 3. */
export function toyDataset(count: number): Dataset {
  const features = new Float32Array(count * 2);
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    features[2 * i] = i;
    features[2 * i + 1] = i + 0.5;
    labels[i] = i % 3;
  }
  return { source: 'toy', count, shape: [2], features, labels, numClasses: 3, labelNames: ['a', 'b', 'c'], scaling: { scale: 1, offset: 0 } };
}

/** The example ids (first feature) of a toyDataset-derived dataset. */
export function ids(ds: Dataset): number[] {
  return Array.from({ length: ds.count }, (_, i) => ds.features[i * 2]!);
}
