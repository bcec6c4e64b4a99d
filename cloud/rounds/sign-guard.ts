import { isDeepStrictEqual } from 'node:util';
import { buildArtifactDescriptor } from '../../shared/manifest/artifact.js';
import { manifestSchema, type Manifest, type SignedManifest } from '../../shared/protocol/schemas.js';
import { eq } from 'drizzle-orm';
import type { StoreRegistry } from '../registry/open.js';
import { cohortSettingsOf, cohortsNow } from './cohorts.js';
import { releaseArtifactUrl } from './manifest.js';
import { allocateReleaseSeq } from './releases.js';
import { artifactRelPath, readArtifact } from './store.js';
import type { ArtifactBlobs } from '../artifacts/types.js';
import type { ManifestSigner } from './types.js';

/** A worker's request the parent refuses to sign (the message goes back to the worker and the log). */
export class SignRefusedError extends Error {
  override readonly name = 'SignRefusedError';
}

/**
 * The parent's side of a round's signing (issue 10 item 9): a round gets one release sequence per
 * release line (the base line, and each of the model's cohorts, issue 13), allocated here, and one
 * signature per line, for a manifest of that line's sequence, the round's model, and exactly the
 * artifact stored under the data dir (its sha256, length and chunk hashes recomputed from the file).
 * Whatever else a worker asks for is refused.
 *
 * On a cluster (issue 15 item 4) the runner passes `allocateSeq` (a transaction fenced on its epoch) and
 * `authorize` (Fence.check): a leader paused past a takeover that resumes gets neither a sequence nor a
 * signature (StaleLeaderError, logged and counted by the fence).
 */
export class RoundSigningGuard {
  /** One sequence per release line (issue 13): null = the base line, else the cohort. */
  private readonly seqs = new Map<string | null, number>();
  /** An allocation under way per line, so two requests for one line get the same sequence. */
  private readonly allocating = new Map<string | null, Promise<number>>();
  private readonly signed = new Set<string | null>();
  /** A request is being checked: a second one meanwhile is refused (no two signatures by a race). */
  private busy = false;

  constructor(
    private readonly round: { id: string; model: string },
    private readonly deps: {
      registry: StoreRegistry;
      dataDir: string;
      blobs?: ArtifactBlobs | undefined;
      signer: ManifestSigner;
      publicBaseUrl?: string | undefined;
      /** Allocates a sequence (default: allocateReleaseSeq on the registry). */
      allocateSeq?: () => Promise<number>;
      /** Throws unless the caller may still sign (the cluster fence's epoch check); called right before signing. */
      authorize?: (action: string) => Promise<void>;
    },
  ) {}

  /** The sequence of one line of the round (default the base line), allocated on the first request; the same one after. */
  async sequence(cohort: string | null = null): Promise<number> {
    const seq = this.seqs.get(cohort);
    if (seq !== undefined) return seq;
    let pending = this.allocating.get(cohort);
    if (!pending) {
      pending = (this.deps.allocateSeq ?? (() => allocateReleaseSeq(this.deps.registry)))().then(
        (s) => {
          this.seqs.set(cohort, s);
          return s;
        },
        (err: unknown) => {
          this.allocating.delete(cohort);
          throw err;
        },
      );
      this.allocating.set(cohort, pending);
    }
    return pending;
  }

  /** The base line's sequence allocated to this round, if any (a worker that died after it leaves a harmless gap). */
  allocated(): number | undefined {
    return this.seqs.get(null);
  }

  async sign(raw: unknown): Promise<SignedManifest> {
    if (this.busy) throw new SignRefusedError(`round ${this.round.id} has a signing request in progress`);
    const parsed = manifestSchema.safeParse(raw);
    if (!parsed.success) throw new SignRefusedError(`not a valid manifest: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
    const m: Manifest = parsed.data;
    const line = m.cohort ?? null;
    const of = line === null ? '' : ` for cohort ${line}`;
    if (this.signed.has(line)) throw new SignRefusedError(`round ${this.round.id} already had its manifest${of} signed`);
    const seq = this.seqs.get(line);
    if (seq === undefined) throw new SignRefusedError(`round ${this.round.id} has no release sequence${of} yet (ask for one first)`);
    if (m.model !== this.round.model) throw new SignRefusedError(`manifest is for model "${m.model}", the round's model is "${this.round.model}"`);
    if (m.release !== seq) throw new SignRefusedError(`manifest is for release ${m.release}, the round was allocated ${seq}${of}`);
    this.busy = true;
    try {
      if (line !== null) await this.checkCohort(line);
      await this.checkArtifact(m);
      // Last, right before the key is used: a stale leader never signs (the line stays unsigned, the worker fails).
      await this.deps.authorize?.('round.sign');
      this.signed.add(line);
    } finally {
      this.busy = false;
    }
    return this.deps.signer.sign(m);
  }

  /** A cohort manifest only for a cohort the model has now (cloud/rounds/cohorts.ts). */
  private async checkCohort(cohort: string): Promise<void> {
    const { models } = this.deps.registry.t;
    const [row] = await this.deps.registry.q.select({ distillSettings: models.distillSettings }).from(models).where(eq(models.name, this.round.model)).limit(1);
    const names = (await cohortsNow(this.deps.registry, cohortSettingsOf(row?.distillSettings))).map((c) => c.name);
    if (!names.includes(cohort)) throw new SignRefusedError(`model "${this.round.model}" has no cohort "${cohort}"`);
  }

  /** The manifest's artifact is exactly the stored file's descriptor, and its URL the cloud's own. */
  private async checkArtifact(m: Manifest): Promise<void> {
    let bytes: Uint8Array;
    try {
      bytes = await readArtifact(this.deps.dataDir, artifactRelPath(m.artifact.sha256), m.artifact.sha256, this.deps.blobs);
    } catch (err) {
      throw new SignRefusedError(`no stored artifact with sha256 ${m.artifact.sha256}: ${(err as Error).message}`);
    }
    const { url, ...claimed } = m.artifact;
    const actual = buildArtifactDescriptor(bytes, { quantization: m.artifact.quantization, chunkSize: m.artifact.chunkSize });
    if (!isDeepStrictEqual({ ...actual }, { ...claimed })) throw new SignRefusedError(`manifest artifact does not describe the stored file ${m.artifact.sha256} (length or chunk hashes differ)`);
    // Devices send their credentials to this URL: only the cloud's own artifact route, or none.
    const expectedUrl = this.deps.publicBaseUrl ? releaseArtifactUrl(this.deps.publicBaseUrl, m.artifact.sha256) : undefined;
    if (url !== expectedUrl) throw new SignRefusedError(`manifest artifact url ${JSON.stringify(url)} is not the cloud's ${JSON.stringify(expectedUrl)}`);
  }
}
