import { and, eq, inArray } from 'drizzle-orm';
import type { Logger } from '../../shared/log/index.js';
import { mapLimit } from '../../shared/util/map-limit.js';
import type { ReleasePublisher } from '../fleet/publisher.js';
import type { StoreRegistry } from '../registry/open.js';
import type { AgentReleaseRow } from '../registry/schema.js';
import { ACTIVE_ROLLOUT_STATES } from '../rollouts/policy.js';
import { signedAgentOf } from './manifest.js';
import { desiredAgents, markAgentChunks } from './store.js';

/**
 * Retained delivery of agent releases (issue 14), beside the model's in cloud/fleet/publisher.ts: the
 * tarball's chunks on `artifacts/{sha}/{i}` like a model's, the signed manifest on `devices/{id}/agent`.
 */

/** Makes sure an agent release's chunks are on the broker (all releases sharing its sha256 are marked). */
export async function ensureAgentChunks(pub: ReleasePublisher, registry: StoreRegistry, row: AgentReleaseRow, { force = false } = {}): Promise<void> {
  if (row.chunksPublished && !force) return;
  const bytes = await pub.artifactBytes('agent', row.artifactPath, row.sha256);
  const chunkSize = (row.manifest as { artifact?: { chunkSize?: number } }).artifact?.chunkSize;
  if (!chunkSize) throw new Error(`agent release ${row.agentSeq}: manifest has no artifact.chunkSize`);
  await pub.publishArtifact(row.sha256, bytes, chunkSize);
  await markAgentChunks(registry, row.sha256, true);
}

/** sha256s of agent tarballs whose chunks must stay: what devices are meant to install, and what active agent rollouts give. */
export async function neededAgentArtifacts(registry: StoreRegistry): Promise<Set<string>> {
  const { rollouts, agentReleases } = registry.t;
  const needed = new Set((await desiredAgents(registry)).map((d) => d.release.sha256));
  const seqs = new Set<number>();
  for (const r of await registry.q.select({ seq: rollouts.releaseSeq, rb: rollouts.rollbackSeq, q: rollouts.quarantineSeqs }).from(rollouts).where(and(eq(rollouts.kind, 'agent'), inArray(rollouts.state, [...ACTIVE_ROLLOUT_STATES])))) {
    seqs.add(r.seq);
    if (r.rb !== null) seqs.add(r.rb);
    for (const s of Object.values(r.q ?? {})) seqs.add(s);
  }
  if (seqs.size) for (const r of await registry.q.select({ sha: agentReleases.sha256 }).from(agentReleases).where(inArray(agentReleases.agentSeq, [...seqs]))) needed.add(r.sha);
  return needed;
}

/** Clears the retained chunks of agent tarballs nobody needs; returns their sha256s. */
export async function gcAgentArtifacts(pub: ReleasePublisher, registry: StoreRegistry, log: Logger): Promise<string[]> {
  const needed = await neededAgentArtifacts(registry);
  const bySha = new Map<string, AgentReleaseRow>();
  const { agentReleases } = registry.t;
  for (const r of await registry.q.select().from(agentReleases).where(eq(agentReleases.chunksPublished, true))) if (!needed.has(r.sha256)) bySha.set(r.sha256, r);
  const cleared: string[] = [];
  for (const [sha, row] of bySha) {
    try {
      const chunks = (row.manifest as { artifact: { chunks: unknown[] } }).artifact.chunks.length;
      await pub.clearArtifact(sha, chunks);
      await markAgentChunks(registry, sha, false);
      cleared.push(sha);
    } catch (err) {
      log.error({ err, sha256: sha }, 'publisher/agent-gc-failed');
    }
  }
  return cleared;
}

/** For the cloud's start and broker reconnects: the chunks of every needed agent tarball and each device's retained agent release. */
export async function republishAgents(pub: ReleasePublisher, registry: StoreRegistry, concurrency: number, log: Logger): Promise<{ artifacts: number; desired: number; failed: number }> {
  const needed = [...(await neededAgentArtifacts(registry))];
  let artifacts = 0;
  let failed = 0;
  const { agentReleases } = registry.t;
  const rows = needed.length ? await registry.q.select().from(agentReleases).where(inArray(agentReleases.sha256, needed)) : [];
  for (const row of new Map(rows.map((r) => [r.sha256, r])).values()) {
    try {
      await ensureAgentChunks(pub, registry, row, { force: true });
      artifacts++;
    } catch (err) {
      failed++;
      log.error({ err, agentSeq: row.agentSeq, sha256: row.sha256 }, 'publisher/republish-agent-artifact-failed');
    }
  }
  let desired = 0;
  await mapLimit(await desiredAgents(registry), concurrency, async ({ deviceId, release }) => {
    try {
      await pub.publishAgent(deviceId, signedAgentOf(release));
      desired++;
    } catch (err) {
      failed++;
      log.error({ err, deviceId, agentSeq: release.agentSeq }, 'publisher/republish-agent-failed');
    }
  });
  return { artifacts, desired, failed };
}
