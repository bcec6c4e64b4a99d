import type { Logger } from '../../shared/log/index.js';
import { ArtifactRejectedError, SHA256_HEX, type ArtifactExpect, type PutRefusal } from './types.js';

/** Logs and counts a refused put, and gives the error to throw (both stores refuse the same way). */
export function refusePut(ctx: { log: Logger; refused?: ((reason: PutRefusal) => void) | undefined }, reason: PutRefusal, message: string, detail: Record<string, unknown> = {}): ArtifactRejectedError {
  ctx.refused?.(reason);
  ctx.log.warn({ reason, ...detail }, `artifacts: put refused: ${message}`);
  return new ArtifactRejectedError(reason, message);
}

/** Refuses an expectation that cannot describe any content (before a byte is read). */
export function checkExpect(ctx: Parameters<typeof refusePut>[0], expect: ArtifactExpect): void {
  if (expect.sha256 !== undefined && !SHA256_HEX.test(expect.sha256)) throw refusePut(ctx, 'bad_sha256', `expected sha256 ${JSON.stringify(expect.sha256.slice(0, 80))} is not 64 lowercase hex digits`);
  if (expect.bytes !== undefined && !(Number.isSafeInteger(expect.bytes) && expect.bytes >= 0)) throw refusePut(ctx, 'length_mismatch', `expected length ${expect.bytes} is not a byte count`);
}

/** Checks what was read against the expectation once the source is exhausted. */
export function checkRead(ctx: Parameters<typeof refusePut>[0], expect: ArtifactExpect, got: { sha256: string; bytes: number }): void {
  if (expect.bytes !== undefined && got.bytes !== expect.bytes) throw refusePut(ctx, 'length_mismatch', `got ${got.bytes} bytes, expected ${expect.bytes}`, { ...got });
  if (expect.sha256 !== undefined && got.sha256 !== expect.sha256) throw refusePut(ctx, 'sha256_mismatch', `content hashes to ${got.sha256}, expected ${expect.sha256}`, { ...got });
}
