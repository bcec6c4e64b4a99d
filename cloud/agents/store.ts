import { and, desc, eq, inArray, isNotNull, max } from 'drizzle-orm';
import type { Registry } from '../registry/db.js';
import { agentReleases, devices, type AgentReleaseRow } from '../registry/schema.js';
import { writeTransaction } from '../rounds/releases.js';

/**
 * The registry's agent releases (issue 14) and each device's desired agent. Every function returns a
 * Promise, so a PostgreSQL-backed registry can implement the same module.
 */
export type NewAgentRelease = Omit<typeof agentReleases.$inferInsert, 'agentSeq'>;

/** Thrown when version+platform already has an uploaded (not re-issued) release. */
export class DuplicateAgentReleaseError extends Error {
  override readonly name = 'DuplicateAgentReleaseError';
}

/**
 * Inserts a release under the next agentSeq, allocated in the same write transaction (so two uploads
 * never share a sequence). `sign` gets the sequence and returns the manifest and signature to store.
 * An upload (reissueOf null) of a version+platform already uploaded is refused.
 */
export async function insertAgentRelease(registry: Registry, build: (agentSeq: number) => Omit<NewAgentRelease, 'createdAt'> & { createdAt?: string }): Promise<AgentReleaseRow> {
  return writeTransaction(registry, () => {
    const db = registry.db;
    const seq = (db.select({ m: max(agentReleases.agentSeq) }).from(agentReleases).get()?.m ?? 0) + 1;
    const row = build(seq);
    if (row.reissueOf === null || row.reissueOf === undefined) {
      const dup = db.select({ s: agentReleases.agentSeq }).from(agentReleases).where(and(eq(agentReleases.version, row.version), eq(agentReleases.platform, row.platform))).get();
      if (dup) throw new DuplicateAgentReleaseError(`agent ${row.version} for ${row.platform} was already pushed (agentSeq ${dup.s})`);
    }
    db.insert(agentReleases).values({ ...row, agentSeq: seq }).run();
    return db.select().from(agentReleases).where(eq(agentReleases.agentSeq, seq)).get()!;
  });
}

export async function agentReleaseBySeq(registry: Registry, agentSeq: number): Promise<AgentReleaseRow | undefined> {
  return registry.db.select().from(agentReleases).where(eq(agentReleases.agentSeq, agentSeq)).get();
}

/** The current release of a version on a platform: its highest agentSeq (a re-issue counts). */
export async function agentRelease(registry: Registry, version: string, platform: string): Promise<AgentReleaseRow | undefined> {
  return registry.db.select().from(agentReleases).where(and(eq(agentReleases.version, version), eq(agentReleases.platform, platform))).orderBy(desc(agentReleases.agentSeq)).limit(1).get();
}

/** Newest first, optionally of one platform. */
export async function listAgentReleases(registry: Registry, { platform, limit = 100 }: { platform?: string; limit?: number } = {}): Promise<AgentReleaseRow[]> {
  return registry.db.select().from(agentReleases).where(platform ? eq(agentReleases.platform, platform) : undefined).orderBy(desc(agentReleases.agentSeq)).limit(limit).all();
}

/** Releases whose artifact has this sha256 (an upload and its re-issues share one tarball). */
export async function agentReleasesBySha(registry: Registry, sha256: string): Promise<AgentReleaseRow[]> {
  return registry.db.select().from(agentReleases).where(eq(agentReleases.sha256, sha256)).all();
}

export async function markAgentChunks(registry: Registry, sha256: string, published: boolean): Promise<void> {
  registry.db.update(agentReleases).set({ chunksPublished: published }).where(eq(agentReleases.sha256, sha256)).run();
}

/** Records the agent release retained on the device's `agent` topic (null: cleared). */
export async function setDesiredAgent(registry: Registry, deviceId: string, agentSeq: number | null): Promise<void> {
  registry.db.update(devices).set({ desiredAgentSeq: agentSeq }).where(eq(devices.id, deviceId)).run();
}

/** Non-revoked devices with a desired agent release, and the releases they name. */
export async function desiredAgents(registry: Registry): Promise<{ deviceId: string; release: AgentReleaseRow }[]> {
  const db = registry.db;
  const rows = db.select({ id: devices.id, seq: devices.desiredAgentSeq }).from(devices).where(and(eq(devices.revoked, false), isNotNull(devices.desiredAgentSeq))).all();
  const seqs = [...new Set(rows.map((r) => r.seq!))];
  const bySeq = new Map((seqs.length ? db.select().from(agentReleases).where(inArray(agentReleases.agentSeq, seqs)).all() : []).map((r) => [r.agentSeq, r]));
  return rows.flatMap((r) => {
    const release = bySeq.get(r.seq!);
    return release ? [{ deviceId: r.id, release }] : [];
  });
}
