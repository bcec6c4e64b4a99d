import { sign as edSign, verify as edVerify } from 'node:crypto';
import { formatIssues, decodePayload, PayloadError } from '../protocol/codec.js';
import { agentManifestSchema, signedAgentManifestSchema, type AgentManifest, type SignedAgentManifest } from '../protocol/agent.js';
import { canonicalBytes, CanonicalJsonError } from './canonical.js';
import { keyIdOf, loadPrivateKey, type TrustedKey } from './keys.js';
import { ManifestError, parsedTrustedKey, type SignWith, type VerifyFailure } from './sign.js';

/**
 * Agent manifests (issue 14) are signed exactly like model manifests (Ed25519 over the RFC 8785
 * canonical JSON of the validated manifest, same keys) but validated with agentManifestSchema, whose
 * `kind: 'agent'` keeps the two documents apart.
 */
export function signAgentManifest(manifest: AgentManifest, key: SignWith): SignedAgentManifest {
  const parsed = agentManifestSchema.safeParse(manifest);
  if (!parsed.success) throw new ManifestError(`refusing to sign an invalid agent manifest: ${formatIssues(parsed.error)}`);
  const privateKey = loadPrivateKey('privateKeyPem' in key ? key.privateKeyPem : key);
  const keyId = keyIdOf(privateKey);
  if ('privateKeyPem' in key && key.keyId !== undefined && key.keyId !== keyId) throw new ManifestError(`key id ${key.keyId} does not match the private key (its id is ${keyId})`);
  const sig = edSign(null, canonicalBytes(parsed.data), privateKey);
  return { manifest: parsed.data, signature: { alg: 'ed25519', keyId, sig: sig.toString('base64') } };
}

export type AgentVerifyResult = { ok: true; manifest: AgentManifest; keyId: string } | { ok: false; reason: VerifyFailure; detail: string };

/**
 * Verifies a `devices/{id}/agent` payload: envelope → trusted key → signature over the manifest as
 * received → only then the agent manifest schema (the same order as verifyManifest).
 */
export function verifyAgentManifest(payload: unknown, trusted: readonly TrustedKey[]): AgentVerifyResult {
  let envelope: { manifest?: unknown; signature: { keyId: string; sig: string } };
  try {
    envelope = typeof payload === 'string' || payload instanceof Uint8Array ? decodePayload(signedAgentManifestSchema, payload) : signedAgentManifestSchema.parse(payload);
  } catch (err) {
    const detail = err instanceof PayloadError ? err.message : err && typeof err === 'object' && 'issues' in err ? formatIssues(err as Parameters<typeof formatIssues>[0]) : String(err);
    return { ok: false, reason: 'malformed_manifest', detail: `signed agent envelope: ${detail}` };
  }
  const { keyId, sig } = envelope.signature;
  const entry = trusted.find((k) => k.keyId === keyId);
  if (!entry) return { ok: false, reason: 'unknown_key', detail: `key ${keyId} is not trusted` };
  let parsedKey: ReturnType<typeof parsedTrustedKey>;
  try {
    parsedKey = parsedTrustedKey(entry.publicKeyPem);
  } catch (err) {
    return { ok: false, reason: 'unknown_key', detail: `trusted key ${keyId} cannot be loaded: ${(err as Error).message}` };
  }
  if (parsedKey.keyId !== keyId) return { ok: false, reason: 'unknown_key', detail: `trusted entry ${keyId} holds a key whose id is ${parsedKey.keyId}` };
  let signed: Buffer;
  try {
    signed = canonicalBytes(envelope.manifest);
  } catch (err) {
    if (err instanceof CanonicalJsonError) return { ok: false, reason: 'malformed_manifest', detail: `agent manifest: ${err.message}` };
    throw err;
  }
  const sigBytes = Buffer.from(sig, 'base64');
  if (sigBytes.length !== 64 || !edVerify(null, signed, parsedKey.key, sigBytes)) return { ok: false, reason: 'bad_signature', detail: `signature does not verify with key ${keyId}` };
  const parsed = agentManifestSchema.safeParse(envelope.manifest);
  if (!parsed.success) return { ok: false, reason: 'malformed_manifest', detail: `agent manifest: ${formatIssues(parsed.error)}` };
  return { ok: true, manifest: parsed.data, keyId };
}
