import { and, desc, eq, isNull, max } from 'drizzle-orm';
import { manifestSchema, type Manifest, type SignedManifest } from '../../shared/protocol/schemas.js';
import type { Registry } from '../registry/db.js';
import { meta, releases, type ReleaseRow } from '../registry/schema.js';
import { releaseArtifactUrl } from './manifest.js';
import type { SyncManifestSigner } from './types.js';

/** meta key holding the highest release sequence ever handed out (survives deleted rows). */
export const RELEASE_SEQ_HIGH = 'release_seq_high';

export class ReleaseError extends Error {
  override readonly name = 'ReleaseError';
}

/**
 * Runs `fn` in a write transaction taken up front (BEGIN IMMEDIATE), so two processes on the same
 * SQLite file (the cloud and a round worker) serialise on the write lock instead of both reading the
 * same max(seq) and one failing at commit. Nested calls become savepoints.
 */
export function writeTransaction<T>(registry: Registry, fn: () => T): T {
  if (registry.sqlite.inTransaction) return registry.sqlite.transaction(fn)();
  return registry.sqlite.transaction(fn).immediate();
}

/**
 * Next release sequence: max(max(releases.seq), meta.release_seq_high) + 1, recorded in meta in the
 * same transaction. Devices refuse any sequence at or below the highest they accepted (DESIGN.md
 * "Edge rules"), so a sequence must never be reused or go down, even after rows were deleted or a
 * worker died between allocating and inserting (that leaves a gap, which is harmless).
 */
export function allocateReleaseSeq(registry: Registry): number {
  return writeTransaction(registry, () => {
    const db = registry.db;
    const fromRows = db.select({ m: max(releases.seq) }).from(releases).get()?.m ?? 0;
    const highRow = db.select({ value: meta.value }).from(meta).where(eq(meta.key, RELEASE_SEQ_HIGH)).get();
    const high = highRow ? Number(highRow.value) : 0;
    if (!Number.isSafeInteger(high) || high < 0) throw new ReleaseError(`meta ${RELEASE_SEQ_HIGH} holds "${highRow?.value}", not a sequence`);
    const next = Math.max(fromRows, high) + 1;
    db.insert(meta)
      .values({ key: RELEASE_SEQ_HIGH, value: String(next) })
      .onConflictDoUpdate({ target: meta.key, set: { value: String(next) } })
      .run();
    return next;
  });
}

/**
 * The current release of a release line (issue 13): the one with the highest sequence (a re-issue
 * counts as current) of `model` and `cohort` (null, the default: the base line).
 */
export function currentRelease(registry: Registry, model: string, cohort: string | null = null): ReleaseRow | undefined {
  const line = and(eq(releases.model, model), cohort === null ? isNull(releases.cohort) : eq(releases.cohort, cohort));
  return registry.db.select().from(releases).where(line).orderBy(desc(releases.seq)).limit(1).get();
}

export function releaseBySeq(registry: Registry, seq: number): ReleaseRow | undefined {
  return registry.db.select().from(releases).where(eq(releases.seq, seq)).get();
}

export type NewRelease = typeof releases.$inferInsert;

export function insertRelease(registry: Registry, row: NewRelease): void {
  registry.db.insert(releases).values(row).run();
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
export function signShadowManifest(registry: Registry, signer: SyncManifestSigner, candidateSeq: number, until: Date, now = new Date()): { seq: number; signed: SignedManifest } {
  return writeTransaction(registry, () => {
    const cand = releaseBySeq(registry, candidateSeq);
    if (!cand) throw new ReleaseError(`cannot shadow release ${candidateSeq}: no such release`);
    const parsed = manifestSchema.safeParse(cand.manifest);
    if (!parsed.success) throw new ReleaseError(`cannot shadow release ${candidateSeq}: its stored manifest is invalid`);
    const old = parsed.data;
    const seq = allocateReleaseSeq(registry);
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
export function reissueRelease(registry: Registry, signer: SyncManifestSigner, previousSeq: number, opts: ReissueOptions = {}): number {
  return writeTransaction(registry, () => {
    const prev = releaseBySeq(registry, previousSeq);
    if (!prev) throw new ReleaseError(`cannot re-issue release ${previousSeq}: no such release`);
    const parsed = manifestSchema.safeParse(prev.manifest);
    if (!parsed.success) throw new ReleaseError(`cannot re-issue release ${previousSeq}: its stored manifest is invalid`);
    const old = parsed.data;
    const latest = currentRelease(registry, prev.model, prev.cohort);
    const seq = allocateReleaseSeq(registry);
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
    insertRelease(registry, {
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
    });
    return seq;
  });
}
