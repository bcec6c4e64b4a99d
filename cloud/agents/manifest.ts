import { sign as edSign } from 'node:crypto';
import { canonicalBytes } from '../../shared/manifest/canonical.js';
import { keyIdOf, loadPrivateKey, type SigningKey } from '../../shared/manifest/keys.js';
import { ManifestError } from '../../shared/manifest/sign.js';
import { formatIssues } from '../../shared/protocol/codec.js';
import { agentManifestSchema, type AgentManifest, type SignedAgentManifest } from '../../shared/protocol/agent.js';
import type { AgentReleaseRow } from '../registry/schema.js';

/** Default validity of an agent manifest: a device refuses an expired one (re-issue to extend). */
export const AGENT_VALIDITY_DAYS = 365;

/**
 * Signs an agent manifest exactly as model releases are signed (shared/manifest/sign.ts): Ed25519 over
 * the RFC 8785 canonical JSON of the schema-checked manifest, with the cloud's active release key.
 * `kind: 'agent'` keeps the two documents apart, so this signature never verifies as a model release.
 */
export function signAgentManifest(manifest: AgentManifest, key: SigningKey): SignedAgentManifest {
  const parsed = agentManifestSchema.safeParse(manifest);
  if (!parsed.success) throw new ManifestError(`refusing to sign an invalid agent manifest: ${formatIssues(parsed.error)}`);
  const privateKey = loadPrivateKey(key.privateKeyPem);
  const keyId = keyIdOf(privateKey);
  if (key.keyId !== keyId) throw new ManifestError(`key id ${key.keyId} does not match the private key (its id is ${keyId})`);
  const sig = edSign(null, canonicalBytes(parsed.data), privateKey);
  return { manifest: parsed.data, signature: { alg: 'ed25519', keyId, sig: sig.toString('base64') } };
}

/** The retained `agent` payload of a release row. */
export function signedAgentOf(row: Pick<AgentReleaseRow, 'manifest' | 'signature'>): SignedAgentManifest {
  return { manifest: row.manifest, signature: row.signature } as SignedAgentManifest;
}
