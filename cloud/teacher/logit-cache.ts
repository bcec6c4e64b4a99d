import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Teacher } from './ort-teacher.js';

/** Fingerprint of a feature matrix: content hash, so any change in data or scaling misses the cache. */
export function featuresFingerprint(features: Float32Array): string {
  return createHash('sha256').update(Buffer.from(features.buffer, features.byteOffset, features.byteLength)).digest('hex').slice(0, 24);
}

/**
 * Teacher logits, computed once per (teacher, examples) and cached on disk as raw float32, so
 * repeated runs (benches, rounds) and every epoch of a run reuse them instead of re-running the
 * teacher. Without a directory it only computes.
 */
export async function cachedTeacherLogits(
  teacher: Teacher,
  features: Float32Array,
  exampleSize: number,
  { dir, onProgress }: { dir?: string; onProgress?: (done: number, total: number) => void } = {},
): Promise<{ logits: Float32Array; classes: number; cached: boolean }> {
  const key = `${teacher.id}-${featuresFingerprint(features)}`;
  const file = dir ? join(dir, `${key}.f32`) : undefined;
  const count = features.length / exampleSize;
  if (file) {
    try {
      const buf = await readFile(file);
      const classes = buf.byteLength / 4 / count;
      if (Number.isInteger(classes) && classes >= 2) {
        const logits = new Float32Array(buf.byteLength / 4);
        new Uint8Array(logits.buffer).set(buf);
        return { logits, classes, cached: true };
      }
    } catch {
      // Missing or unreadable cache entry: recompute below.
    }
  }
  const { logits, classes } = await teacher.logits(features, exampleSize, onProgress);
  if (file && dir) {
    await mkdir(dir, { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    await writeFile(tmp, Buffer.from(logits.buffer, logits.byteOffset, logits.byteLength));
    await rename(tmp, file);
  }
  return { logits, classes, cached: false };
}
