import { mkdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { chunkArtifact, DEFAULT_CHUNK_SIZE, sha256Of } from '../../shared/manifest/artifact.js';
import type { SigningKey } from '../../shared/manifest/keys.js';
import { PROTOCOL_REVISION } from '../../shared/protocol/compat.js';
import { type AgentManifest, type AgentPlatform } from '../../shared/protocol/agent.js';
import type { StoreRegistry } from '../registry/open.js';
import type { ArtifactBlobs } from '../artifacts/types.js';
import type { AgentReleaseRow } from '../registry/schema.js';
import { releaseArtifactUrl } from '../rounds/manifest.js';
import { writeFileAtomic } from '../rounds/store.js';
import { inspectAgentArchive } from './archive.js';
import { AGENT_VALIDITY_DAYS, signAgentManifest } from './manifest.js';
import { agentReleaseBySeq, insertAgentRelease } from './store.js';

/** Where agent tarballs live under the data dir, content-addressed like model artifacts. */
export const agentArtifactRelPath = (sha256: string): string => join('agents', `${sha256}.tar.gz`);

/** No agent release with that agentSeq / version. */
export class AgentNotFoundError extends Error {
  override readonly name = 'AgentNotFoundError';
}

/** The pushed tarball disagrees with what the push said it is (agent.json vs --version/--platform). */
export class AgentMismatchError extends Error {
  override readonly name = 'AgentMismatchError';
}

export interface ReleaseAgentInput {
  registry: StoreRegistry;
  dataDir: string;
  /** The artifact store when it is the registry (PostgreSQL, issue 15): the tarball goes there, not under dataDir. */
  blobs?: ArtifactBlobs;
  key: SigningKey;
  /** The uploaded tarball (a temp file; moved into the store on success). */
  tarPath: string;
  /** What the push claims; each given field must equal agent.json's. */
  expect?: { version?: string | undefined; platform?: AgentPlatform | undefined };
  /** Agent versions that may install this one; default any. */
  upgradeFrom?: string[];
  publicBaseUrl?: string | undefined;
  chunkSize?: number;
  validityDays?: number;
  now: Date;
}

/**
 * `apprentice agent push` on the cloud side (issue 14): the listing is computed from the archive
 * itself (never taken from the client), checked against the push's flags, the tarball moved into
 * the content-addressed store, and an agent manifest signed with the same key as model releases.
 * Throws ArchiveRejectedError, AgentMismatchError or DuplicateAgentReleaseError.
 */
export async function releaseAgent(i: ReleaseAgentInput): Promise<AgentReleaseRow> {
  const info = await inspectAgentArchive(i.tarPath);
  for (const f of ['version', 'platform'] as const) {
    const want = i.expect?.[f];
    if (want !== undefined && want !== info[f]) throw new AgentMismatchError(`the archive's agent.json says ${f} ${info[f]}, the push says ${want}`);
  }
  const bytes = new Uint8Array(await readFile(i.tarPath));
  const sha256 = sha256Of(bytes);
  const chunkSize = i.chunkSize ?? DEFAULT_CHUNK_SIZE;
  let relPath = agentArtifactRelPath(sha256);
  if (i.blobs?.backend === 'registry') {
    relPath = (await i.blobs.put('agent', bytes, { sha256, bytes: bytes.byteLength })).relPath;
    await rm(i.tarPath, { force: true });
  } else {
    const dest = join(i.dataDir, relPath);
    await mkdir(join(i.dataDir, 'agents'), { recursive: true });
    await rename(i.tarPath, dest).catch(() => writeFileAtomic(dest, bytes));
  }
  const createdAt = i.now.toISOString();
  const expiresAt = new Date(i.now.getTime() + (i.validityDays ?? AGENT_VALIDITY_DAYS) * 86_400_000).toISOString();
  return insertAgentRelease(i.registry, (agentSeq) => {
    const manifest: AgentManifest = {
      v: 1,
      kind: 'agent',
      version: info.version,
      platform: info.platform,
      agentSeq,
      artifact: {
        format: 'tar.gz',
        sha256,
        bytes: bytes.byteLength,
        chunkSize,
        chunks: chunkArtifact(bytes, chunkSize).map(sha256Of),
        ...(i.publicBaseUrl ? { url: releaseArtifactUrl(i.publicBaseUrl, sha256) } : {}),
      },
      files: info.files,
      minProtocolVersion: PROTOCOL_REVISION,
      upgradeFrom: i.upgradeFrom ?? ['*'],
      createdAt,
      expiresAt,
    };
    const signed = signAgentManifest(manifest, i.key);
    return { version: info.version, platform: info.platform, sha256, bytes: bytes.byteLength, manifest: signed.manifest, signature: signed.signature, reissueOf: null, artifactPath: relPath, createdAt };
  });
}

/**
 * A rollback (issue 14): release `agentSeq` signed again under a new, higher agentSeq (a device never
 * accepts one at or below its floor), with `reissueOf` set and a fresh validity. Same tarball.
 */
export async function reissueAgent({ registry, key, agentSeq, now, validityDays }: { registry: StoreRegistry; key: SigningKey; agentSeq: number; now: Date; validityDays?: number }): Promise<AgentReleaseRow> {
  const old = await agentReleaseBySeq(registry, agentSeq);
  if (!old) throw new AgentNotFoundError(`agent release ${agentSeq} does not exist`);
  const prev = old.manifest as AgentManifest;
  const createdAt = now.toISOString();
  const expiresAt = new Date(now.getTime() + (validityDays ?? AGENT_VALIDITY_DAYS) * 86_400_000).toISOString();
  const original = old.reissueOf ?? old.agentSeq;
  return insertAgentRelease(registry, (seq) => {
    const signed = signAgentManifest({ ...prev, agentSeq: seq, reissueOf: original, createdAt, expiresAt }, key);
    return { version: old.version, platform: old.platform, sha256: old.sha256, bytes: old.bytes, manifest: signed.manifest, signature: signed.signature, reissueOf: original, artifactPath: old.artifactPath, createdAt };
  });
}
