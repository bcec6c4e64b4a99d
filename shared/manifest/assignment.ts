import { sign as edSign, verify as edVerify } from 'node:crypto';
import { formatIssues } from '../protocol/codec.js';
import { assignmentSchema, signedAssignmentSchema, type Assignment } from '../protocol/schemas.js';
import { canonicalBytes, CanonicalJsonError } from './canonical.js';
import { keyIdOf, loadPrivateKey, loadPublicKey, type TrustedKey } from './keys.js';

/**
 * The signed assignment `{deviceId, model, cohort}` (issue 10 item 4): signed by a release key over its
 * RFC 8785 canonical JSON, like a manifest, and carried beside it in `desired`.
 */
export type SignedAssignment = { assignment: Assignment; signature: { alg: 'ed25519'; keyId: string; sig: string } };

export function signAssignment(assignment: Assignment, privateKeyPem: string): SignedAssignment {
  const parsed = assignmentSchema.parse(assignment);
  const key = loadPrivateKey(privateKeyPem);
  return { assignment: parsed, signature: { alg: 'ed25519', keyId: keyIdOf(key), sig: edSign(null, canonicalBytes(parsed), key).toString('base64') } };
}

export type AssignmentVerdict =
  | { ok: true; assignment: Assignment; keyId: string }
  | { ok: false; reason: 'malformed_manifest' | 'unknown_key' | 'bad_signature'; detail: string };

/** Checks a signed assignment against the trusted release keys. Never throws. */
export function verifyAssignment(signed: unknown, trusted: readonly TrustedKey[]): AssignmentVerdict {
  const env = signedAssignmentSchema.safeParse(signed);
  if (!env.success) return { ok: false, reason: 'malformed_manifest', detail: `assignment envelope: ${formatIssues(env.error)}` };
  const { keyId, sig } = env.data.signature;
  const entry = trusted.find((k) => k.keyId === keyId);
  if (!entry) return { ok: false, reason: 'unknown_key', detail: `assignment key ${keyId} is not trusted` };
  let bytes: Buffer;
  try {
    bytes = canonicalBytes(env.data.assignment);
  } catch (err) {
    if (err instanceof CanonicalJsonError) return { ok: false, reason: 'malformed_manifest', detail: `assignment: ${err.message}` };
    throw err;
  }
  try {
    const pub = loadPublicKey(entry.publicKeyPem);
    const s = Buffer.from(sig, 'base64');
    if (keyIdOf(pub) !== keyId || s.length !== 64 || !edVerify(null, bytes, pub, s)) return { ok: false, reason: 'bad_signature', detail: `assignment signature does not verify with key ${keyId}` };
  } catch (err) {
    return { ok: false, reason: 'unknown_key', detail: `trusted key ${keyId} cannot be loaded: ${(err as Error).message}` };
  }
  const a = assignmentSchema.safeParse(env.data.assignment);
  if (!a.success) return { ok: false, reason: 'malformed_manifest', detail: `assignment: ${formatIssues(a.error)}` };
  return { ok: true, assignment: a.data, keyId };
}
