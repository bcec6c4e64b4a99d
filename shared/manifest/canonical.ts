import canonicalize from 'canonicalize';

export class CanonicalJsonError extends Error {
  override readonly name = 'CanonicalJsonError';
}

/**
 * RFC 8785 (JCS) canonical JSON of a value: sorted keys, ECMAScript number form, no whitespace.
 * Signatures cover these bytes, so a re-serialisation with another key order still verifies.
 * Throws for values JSON cannot carry (NaN, Infinity, lone surrogates, undefined at the root).
 */
export function canonicalJson(value: unknown): string {
  let out: string | undefined;
  try {
    out = canonicalize(value);
  } catch (err) {
    throw new CanonicalJsonError(`cannot canonicalize: ${(err as Error).message}`);
  }
  if (out === undefined) throw new CanonicalJsonError('cannot canonicalize: value has no JSON form');
  return out;
}

/** UTF-8 bytes of {@link canonicalJson}. */
export function canonicalBytes(value: unknown): Buffer {
  return Buffer.from(canonicalJson(value), 'utf8');
}
