import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exampleSchema, float32ToBase64, type Example } from '../../../shared/protocol/index.js';

/** A valid example; `floats` controls its size. */
export function makeExample(reason: Example['reason'] = 'low_confidence', floats = 16, extra: Partial<Example> = {}): Example {
  const input = new Float32Array(floats).map((_, i) => i / floats);
  return {
    id: randomUUID(),
    input: float32ToBase64(input),
    output: [0.4, 0.35, 0.25],
    model: 'mnist',
    release: 3,
    at: new Date(0).toISOString(),
    reason,
    ...(reason === 'feedback' ? { label: 1 } : {}),
    ...extra,
  };
}

/** The byte count the outbox stores for an example (UTF-8 JSON of the parsed example). */
export const rowBytes = (e: Example) => Buffer.byteLength(JSON.stringify(exampleSchema.parse(e)));

export function tempDir(prefix = 'apprentice-outbox-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
