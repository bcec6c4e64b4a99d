import { and, eq, sql } from 'drizzle-orm';
import type { NodePgDatabase } from 'drizzle-orm/node-postgres';
import { clusterLeader, clusterRoundClaims } from './schema-pg.js';

/**
 * The cluster tables' store: every SQL statement the leader elector, the fence and the round claims run.
 * Works on any drizzle node-postgres database (the registry's pool, or the elector's dedicated client)
 * and on a transaction of one.
 */
// `any` schema: accepts the registry's drizzle db whatever tables it declares.
export type ClusterDb = NodePgDatabase<any>;
export type ClusterTx = Parameters<Parameters<ClusterDb['transaction']>[0]>[0];
type Q = ClusterDb | ClusterTx;

const LEADER_ROW = 1;

/** Tries the session advisory lock (held until the session ends or it is unlocked). */
export async function tryAdvisoryLock(db: Q, key: number): Promise<boolean> {
  const r = await db.execute<{ ok: boolean }>(sql`SELECT pg_try_advisory_lock(${key}::bigint) AS ok`);
  return r.rows[0]?.ok === true;
}

/**
 * Starts a leadership: epoch + 1 (1 on an empty table), in a transaction. Returns the new epoch.
 * It first locks the row FOR UPDATE, the one row lock that conflicts with the fence's FOR KEY SHARE, so
 * it waits for every fenced write in flight (an upsert alone would take only FOR NO KEY UPDATE).
 */
export async function bumpEpoch(db: ClusterDb, holder: string): Promise<number> {
  return db.transaction(async (tx) => {
    await tx.select({ id: clusterLeader.id }).from(clusterLeader).where(eq(clusterLeader.id, LEADER_ROW)).for('update');
    const rows = await tx
      .insert(clusterLeader)
      .values({ id: LEADER_ROW, epoch: 1, holder, acquiredAt: sql`now()`, renewedAt: sql`now()` })
      .onConflictDoUpdate({
        target: clusterLeader.id,
        set: { epoch: sql`${clusterLeader.epoch} + 1`, holder, acquiredAt: sql`now()`, renewedAt: sql`now()` },
      })
      .returning({ epoch: clusterLeader.epoch });
    const epoch = rows[0]?.epoch;
    if (epoch === undefined) throw new Error('cluster_leader upsert returned no row');
    return epoch;
  });
}

/**
 * The leader's heartbeat: true while the row still carries this leadership's epoch and holder. A plain
 * UPDATE of a non-key column takes FOR NO KEY UPDATE, which does not wait for the leader's own fenced
 * writes (FOR KEY SHARE), so a long fenced transaction never makes its leader miss a renew.
 */
export async function renewLeadership(db: Q, epoch: number, holder: string): Promise<boolean> {
  const rows = await db
    .update(clusterLeader)
    .set({ renewedAt: sql`now()` })
    .where(and(eq(clusterLeader.id, LEADER_ROW), eq(clusterLeader.epoch, epoch), eq(clusterLeader.holder, holder)))
    .returning({ epoch: clusterLeader.epoch });
  return rows.length === 1;
}

export interface LeaderRow {
  epoch: number;
  holder: string;
  acquiredAt: Date;
  renewedAt: Date;
}

/** The current leadership, or null before any replica was elected. */
export async function readLeader(db: Q): Promise<LeaderRow | null> {
  const rows = await db.select().from(clusterLeader).where(eq(clusterLeader.id, LEADER_ROW));
  const r = rows[0];
  return r ? { epoch: r.epoch, holder: r.holder, acquiredAt: r.acquiredAt, renewedAt: r.renewedAt } : null;
}

/**
 * The current epoch read `FOR KEY SHARE` inside a transaction: until that transaction ends, a new
 * leader's epoch bump (FOR UPDATE) waits, so a write that passed this check commits before any takeover
 * does; the leader's renews (FOR NO KEY UPDATE) do not wait.
 */
export async function lockEpochForShare(tx: ClusterTx): Promise<number | null> {
  const rows = await tx
    .select({ epoch: clusterLeader.epoch })
    .from(clusterLeader)
    .where(eq(clusterLeader.id, LEADER_ROW))
    .for('key share');
  return rows[0]?.epoch ?? null;
}

/** Bounds a fenced transaction so a paused writer cannot hold the epoch row's share lock for long. */
export async function setLocalTimeouts(tx: ClusterTx, idleInTransactionMs: number, lockTimeoutMs: number): Promise<void> {
  await tx.execute(sql.raw(`SET LOCAL idle_in_transaction_session_timeout = ${Math.trunc(idleInTransactionMs)}`));
  await tx.execute(sql.raw(`SET LOCAL lock_timeout = ${Math.trunc(lockTimeoutMs)}`));
}

export interface RoundClaimRow {
  modelId: string;
  roundId: string;
  epoch: number;
  holder: string;
  claimedAt: Date;
}

export async function lockRoundClaim(tx: ClusterTx, modelId: string): Promise<RoundClaimRow | null> {
  const rows = await tx.select().from(clusterRoundClaims).where(eq(clusterRoundClaims.modelId, modelId)).for('update');
  return rows[0] ?? null;
}

export async function upsertRoundClaim(tx: ClusterTx, claim: Omit<RoundClaimRow, 'claimedAt'>): Promise<void> {
  await tx
    .insert(clusterRoundClaims)
    .values({ ...claim, claimedAt: sql`now()` })
    .onConflictDoUpdate({
      target: clusterRoundClaims.modelId,
      set: { roundId: claim.roundId, epoch: claim.epoch, holder: claim.holder, claimedAt: sql`now()` },
    });
}

export async function deleteRoundClaim(tx: ClusterTx, modelId: string, roundId: string): Promise<boolean> {
  const rows = await tx
    .delete(clusterRoundClaims)
    .where(and(eq(clusterRoundClaims.modelId, modelId), eq(clusterRoundClaims.roundId, roundId)))
    .returning({ modelId: clusterRoundClaims.modelId });
  return rows.length === 1;
}

export async function listRoundClaims(db: Q): Promise<RoundClaimRow[]> {
  return db.select().from(clusterRoundClaims);
}

/** An error's message with its causes (drizzle wraps the driver's error: "Failed query: …" → cause). */
export function errorText(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err, depth = 0; e !== undefined && e !== null && depth < 4; depth++) {
    parts.push(e instanceof Error ? e.message.split('\n')[0]! : String(e));
    e = e instanceof Error ? e.cause : undefined;
  }
  return parts.join(': ');
}
