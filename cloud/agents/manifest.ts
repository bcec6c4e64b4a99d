import type { SignedAgentManifest } from '../../shared/protocol/agent.js';
import type { AgentReleaseRow } from '../registry/schema.js';

/** Default validity of an agent manifest: a device refuses an expired one (re-issue to extend). */
export const AGENT_VALIDITY_DAYS = 365;

/** The one signer of agent manifests, shared with the tests and the device's verifier (shared/manifest/agent.ts). */
export { signAgentManifest } from '../../shared/manifest/agent.js';

/** The retained `agent` payload of a release row. */
export function signedAgentOf(row: Pick<AgentReleaseRow, 'manifest' | 'signature'>): SignedAgentManifest {
  return { manifest: row.manifest, signature: row.signature } as SignedAgentManifest;
}
