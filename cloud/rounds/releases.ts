import { and, desc, eq, isNull, max } from 'drizzle-orm';
import { manifestSchema, type Manifest, type SignedManifest } from '../../shared/protocol/schemas.js';
import type { StoreRegistry } from '../registry/open.js';
import type { ReleaseRow } from '../registry/schema.js';
import { q, type Statement, type Tables, type TxDb } from '../registry/tx.js';
import { releaseArtifactUrl } from './manifest.js';
import type { SyncManifestSigner } from './types.js';

/** meta key holding the highest release sequence ever handed out (survives deleted rows). */
export const RELEASE_SEQ_HIGH = 'release_seq_high';

export class ReleaseError extends Error {
  override readonly name = 'ReleaseError';
}

/**
 * Transaction body step: the next release sequence, max(max(releases.seq), meta.release_seq_high) + 1,
 * recorded in meta in the same transaction. Devices refuse any sequence at or below the highest they
 * accepted (DESIGN.md "Edge rules"), so a sequence must never be reused or go down, even after rows were
 * deleted or a worker died between allocating and inserting (that leaves a gap, which is harmless).
 * SQLite serialises on the write lock (BEGIN IMMEDIATE), PostgreSQL on SERIALIZABLE with retries.
 */
export function* allocateReleaseSeqIn(tx: TxDb, t: Tables): Generator<Statement, number, unknown> {
  const [fromRows] = yield* q(tx.select({ m: max(t.releases.seq) }).from(t.releases));
  const [highRow] = yield* q(tx.select({ value: t.meta.value }).from(t.meta).where(eq(t.meta.key, RELEASE_SEQ_HIGH)));
  const high = highRow ? Number(highRow.value) : 0;
  if (!Number.isSafeInteger(high) || high < 0) throw new ReleaseError(`meta ${RELEASE_SEQ_HIGH} holds "${highRow?.value}", not a sequence`);
  const next = Math.max(fromRows?.m ?? 0, high) + 1;
  yield* q(tx.insert(t.meta).values({ key: RELEASE_SEQ_HIGH, value: String(next) }).onConflictDoUpdate({ target: t.meta.key, set: { value: String(next) } }));
  return next;
}

/** The next release sequence, committed (allocateReleaseSeqIn in its own transaction). */
export async function allocateReleaseSeq(reg: StoreRegistry): Promise<number> {
  return reg.tx(allocateReleaseSeqIn);
}

function lineOf(t: Tables, model: string, cohort: string | null) {
  return and(eq(t.releases.model, model), cohort === null ? isNull(t.releases.cohort) : eq(t.releases.cohort, cohort));
}

/**
 * The current release of a release line (issue 13): the one with the highest sequence (a re-issue
 * counts as current) of `model` and `cohort` (null, the default: the base line).
 */
export async function currentRelease(reg: StoreRegistry, model: string, cohort: string | null = null): Promise<ReleaseRow | undefined> {
  const [row] = await reg.q.select().from(reg.t.releases).where(lineOf(reg.t, model, cohort)).orderBy(desc(reg.t.releases.seq)).limit(1);
  return row;
}

export async function releaseBySeq(reg: StoreRegistry, seq: number): Promise<ReleaseRow | undefined> {
  const [row] = await reg.q.select().from(reg.t.releases).where(eq(reg.t.releases.seq, seq)).limit(1);
  return row;
}

export type NewRelease = Tables['releases']['$inferInsert'];

export async function insertRelease(reg: StoreRegistry, row: NewRelease): Promise<void> {
  // A transaction, so a fenced registry view (a round worker on a cluster, fenced-store.ts) fences it.
  await reg.tx(function* (tx, t) {
    yield* q(tx.insert(t.releases).values(row));
  });
}

/** The holdout accuracy a release recorded (what the next round's gate compares against). */
export function recordedHoldoutAccuracy(row: Pick<ReleaseRow, 'metrics'>): number | undefined {
  const v = (row.metrics as Record<string, unknown> | null)?.holdoutAccuracy;
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

/**
 * Same bytes, same content address. An older manifest's per-release URL (which devices could not use:
 * it needs the admin token) moves to the device-authenticated /v1/artifacts/{sha256}.
 */
export function deviceArtifactUrl(old: Manifest, seq: number): string | undefined {
  const suffix = `/v1/releases/${seq}/artifact`;
  return old.artifact.url?.endsWith(suffix) ? releaseArtifactUrl(old.artifact.url.slice(0, -suffix.length), old.artifact.sha256) : old.artifact.url;
}

/**
 * On-device shadow mode (issue 13 item 4): release `candidateSeq`'s model as a shadow manifest, signed,
 * with `shadow.until` and a new sequence from the one global sequence (no releases row: it is never
 * installed as a release, and devices do not raise their floor for it). `lineage.reissueOf` names the
 * candidate; the manifest expires with the window.
 */
export async function signShadowManifest(reg: StoreRegistry, signer: SyncManifestSigner, candidateSeq: number, until: Date, now = new Date()): Promise<{ seq: number; signed: SignedManifest }> {
  // Signing is a pure function of the manifest, so the body stays re-runnable (tx.ts).
  return reg.tx(function* (tx, t) {
    const [cand] = yield* q(tx.select().from(t.releases).where(eq(t.releases.seq, candidateSeq)).limit(1));
    if (!cand) throw new ReleaseError(`cannot shadow release ${candidateSeq}: no such release`);
    const parsed = manifestSchema.safeParse(cand.manifest);
    if (!parsed.success) throw new ReleaseError(`cannot shadow release ${candidateSeq}: its stored manifest is invalid`);
    const old = parsed.data;
    const seq = yield* allocateReleaseSeqIn(tx, t);
    const url = deviceArtifactUrl(old, candidateSeq);
    const manifest: Manifest = {
      ...old,
      release: seq,
      artifact: { ...old.artifact, ...(url !== undefined ? { url } : {}) },
      lineage: { ...old.lineage, reissueOf: candidateSeq },
      createdAt: now.toISOString(),
      expiresAt: until.toISOString(),
      shadow: { until: until.toISOString() },
    };
    return { seq, signed: signer.sign(manifestSchema.parse(manifest)) };
  });
}

export interface ReissueOptions {
  now?: Date;
  /** Validity of the new manifest; default: the same span as the original manifest. */
  validityMs?: number;
}

/**
 * Rollback: re-issues the model of release `previousSeq` (same artifact bytes, same metrics) under a
 * NEW, higher sequence with `lineage.reissueOf = previousSeq`, a fresh createdAt/expiresAt and a new
 * signature. Devices only move forward in sequence, so "going back" must look like a new release.
 * The manifest's parent is the current release of the same line (the one being rolled back from); a
 * cohort release stays on its cohort's line (its manifest keeps `cohort`).
 * Returns the new sequence. Allocation, signing and insertion happen in one transaction.
 */
export async function reissueRelease(reg: StoreRegistry, signer: SyncManifestSigner, previousSeq: number, opts: ReissueOptions = {}): Promise<number> {
  return reg.tx(function* (tx, t) {
    const [prev] = yield* q(tx.select().from(t.releases).where(eq(t.releases.seq, previousSeq)).limit(1));
    if (!prev) throw new ReleaseError(`cannot re-issue release ${previousSeq}: no such release`);
    const parsed = manifestSchema.safeParse(prev.manifest);
    if (!parsed.success) throw new ReleaseError(`cannot re-issue release ${previousSeq}: its stored manifest is invalid`);
    const old = parsed.data;
    const [latest] = yield* q(tx.select().from(t.releases).where(lineOf(t, prev.model, prev.cohort)).orderBy(desc(t.releases.seq)).limit(1));
    const seq = yield* allocateReleaseSeqIn(tx, t);
    const now = opts.now ?? new Date();
    const validity = opts.validityMs ?? Date.parse(old.expiresAt) - Date.parse(old.createdAt);
    const url = deviceArtifactUrl(old, previousSeq);
    const manifest: Manifest = {
      ...old,
      release: seq,
      artifact: { ...old.artifact, ...(url !== undefined ? { url } : {}) },
      lineage: { ...old.lineage, reissueOf: previousSeq },
      parent: latest?.seq ?? null,
      createdAt: now.toISOString(),
      expiresAt: new Date(now.getTime() + Math.max(validity, 60_000)).toISOString(),
    };
    const signed = signer.sign(manifest);
    yield* q(
      tx.insert(t.releases).values({
        model: prev.model,
        seq,
        sha256: prev.sha256,
        bytes: prev.bytes,
        quantization: prev.quantization,
        metrics: { ...(prev.metrics as Record<string, unknown>), reissueOf: previousSeq },
        manifest: signed.manifest,
        signature: signed.signature,
        parentSeq: latest?.seq ?? null,
        cohort: prev.cohort,
        roundId: null,
        artifactPath: prev.artifactPath,
        chunksPublished: false,
      }),
    );
    return seq;
  });
}
