import { and, desc, eq, inArray, isNotNull, max } from 'drizzle-orm';
import type { StoreRegistry } from '../registry/open.js';
import type { AgentReleaseRow, agentReleases } from '../registry/schema.js';
import { q } from '../registry/tx.js';

/**
 * The registry's agent releases (issue 14) and each device's desired agent, on either registry dialect
 * (issue 15): every function takes a `StoreRegistry` and returns a Promise.
 */
export type NewAgentRelease = Omit<typeof agentReleases.$inferInsert, 'agentSeq'>;

/** Thrown when version+platform already has an uploaded (not re-issued) release. */
export class DuplicateAgentReleaseError extends Error {
  override readonly name = 'DuplicateAgentReleaseError';
}

/**
 * Inserts a release under the next agentSeq, allocated in the same transaction (so two uploads never share
 * a sequence: on PostgreSQL the SERIALIZABLE transaction retries, on SQLite the write lock serialises).
 * `build` gets the sequence and returns the row to store (it may run again on a retry: keep it pure).
 * An upload (reissueOf null) of a version+platform already uploaded is refused.
 */
export async function insertAgentRelease(reg: StoreRegistry, build: (agentSeq: number) => Omit<NewAgentRelease, 'createdAt'> & { createdAt?: string }): Promise<AgentReleaseRow> {
  return reg.tx(function* (tx, t) {
    const [top] = yield* q(tx.select({ m: max(t.agentReleases.agentSeq) }).from(t.agentReleases));
    const seq = (top?.m ?? 0) + 1;
    const row = build(seq);
    if (row.reissueOf === null || row.reissueOf === undefined) {
      const [dup] = yield* q(tx.select({ s: t.agentReleases.agentSeq }).from(t.agentReleases).where(and(eq(t.agentReleases.version, row.version), eq(t.agentReleases.platform, row.platform))).limit(1));
      if (dup) throw new DuplicateAgentReleaseError(`agent ${row.version} for ${row.platform} was already pushed (agentSeq ${dup.s})`);
    }
    const [inserted] = yield* q(tx.insert(t.agentReleases).values({ ...row, agentSeq: seq }).returning());
    return inserted!;
  });
}

export async function agentReleaseBySeq(reg: StoreRegistry, agentSeq: number): Promise<AgentReleaseRow | undefined> {
  const [row] = await reg.q.select().from(reg.t.agentReleases).where(eq(reg.t.agentReleases.agentSeq, agentSeq)).limit(1);
  return row;
}

/** The current release of a version on a platform: its highest agentSeq (a re-issue counts). */
export async function agentRelease(reg: StoreRegistry, version: string, platform: string): Promise<AgentReleaseRow | undefined> {
  const a = reg.t.agentReleases;
  const [row] = await reg.q.select().from(a).where(and(eq(a.version, version), eq(a.platform, platform))).orderBy(desc(a.agentSeq)).limit(1);
  return row;
}

/** Newest first, optionally of one platform. */
export async function listAgentReleases(reg: StoreRegistry, { platform, limit = 100 }: { platform?: string; limit?: number } = {}): Promise<AgentReleaseRow[]> {
  const a = reg.t.agentReleases;
  return reg.q.select().from(a).where(platform ? eq(a.platform, platform) : undefined).orderBy(desc(a.agentSeq)).limit(limit);
}

/** Releases whose artifact has this sha256 (an upload and its re-issues share one tarball). */
export async function agentReleasesBySha(reg: StoreRegistry, sha256: string): Promise<AgentReleaseRow[]> {
  return reg.q.select().from(reg.t.agentReleases).where(eq(reg.t.agentReleases.sha256, sha256));
}

export async function markAgentChunks(reg: StoreRegistry, sha256: string, published: boolean): Promise<void> {
  // Transactions, not single statements: on the leader's fenced registry (issue 15) they are refused after a takeover.
  await reg.tx((tx, t) => q(tx.update(t.agentReleases).set({ chunksPublished: published }).where(eq(t.agentReleases.sha256, sha256))));
}

/** Records the agent release retained on the device's `agent` topic (null: cleared). */
export async function setDesiredAgent(reg: StoreRegistry, deviceId: string, agentSeq: number | null): Promise<void> {
  await reg.tx((tx, t) => q(tx.update(t.devices).set({ desiredAgentSeq: agentSeq }).where(eq(t.devices.id, deviceId))));
}

/** Non-revoked devices with a desired agent release, and the releases they name. */
export async function desiredAgents(reg: StoreRegistry): Promise<{ deviceId: string; release: AgentReleaseRow }[]> {
  const { devices, agentReleases } = reg.t;
  const rows = await reg.q.select({ id: devices.id, seq: devices.desiredAgentSeq }).from(devices).where(and(eq(devices.revoked, false), isNotNull(devices.desiredAgentSeq)));
  const seqs = [...new Set(rows.map((r) => r.seq!))];
  const bySeq = new Map((seqs.length ? await reg.q.select().from(agentReleases).where(inArray(agentReleases.agentSeq, seqs)) : []).map((r) => [r.agentSeq, r]));
  return rows.flatMap((r) => {
    const release = bySeq.get(r.seq!);
    return release ? [{ deviceId: r.id, release }] : [];
  });
}
