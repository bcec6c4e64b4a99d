/**
 * A problem with what the user asked for (bad flag value, missing file, malformed dataset).
 * The CLI prints its message on one line and exits with code 2.
 */
export class UsageError extends Error {
  override readonly name: string = 'UsageError';
}

/** Parses a positive integer flag value or throws a UsageError naming the flag. */
export function parsePositiveInt(flag: string, value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n <= 0) {
    throw new UsageError(`${flag}: expected a positive integer, got "${value}"`);
  }
  return n;
}

/** Parses a non-negative integer (0 allowed). */
export function parseNonNegativeInt(flag: string, value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n)) {
    throw new UsageError(`${flag}: expected a non-negative integer, got "${value}"`);
  }
  return n;
}

/** Parses a finite number, optionally bounded, or throws a UsageError naming the flag. */
export function parseNumber(flag: string, value: string, { min, max }: { min?: number; max?: number } = {}): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new UsageError(`${flag}: expected a number, got "${value}"`);
  if (min !== undefined && n < min) throw new UsageError(`${flag}: must be >= ${min}, got ${n}`);
  if (max !== undefined && n > max) throw new UsageError(`${flag}: must be <= ${max}, got ${n}`);
  return n;
}
