import { isDeepStrictEqual } from 'node:util';
import { buildArtifactDescriptor } from '../../shared/manifest/artifact.js';
import { manifestSchema, type Manifest, type SignedManifest } from '../../shared/protocol/schemas.js';
import type { Registry } from '../registry/db.js';
import { releaseArtifactUrl } from './manifest.js';
import { allocateReleaseSeq } from './releases.js';
import { artifactRelPath, readArtifact } from './store.js';
import type { ManifestSigner } from './types.js';

/** A worker's request the parent refuses to sign (the message goes back to the worker and the log). */
export class SignRefusedError extends Error {
  override readonly name = 'SignRefusedError';
}

/**
 * The parent's side of a round's signing (issue 10 item 9): a round gets one release sequence,
 * allocated here, and one signature, for a manifest of that sequence, the round's model, and exactly
 * the artifact stored under the data dir (its sha256, length and chunk hashes recomputed from the
 * file). Whatever else a worker asks for is refused.
 */
export class RoundSigningGuard {
  private seq: number | undefined;
  private signed = false;
  /** A request is being checked: a second one meanwhile is refused (no two signatures by a race). */
  private busy = false;

  constructor(
    private readonly round: { id: string; model: string },
    private readonly deps: { registry: Registry; dataDir: string; signer: ManifestSigner; publicBaseUrl?: string | undefined },
  ) {}

  /** The round's sequence, allocated on the first request; the same one after. */
  sequence(): number {
    this.seq ??= allocateReleaseSeq(this.deps.registry);
    return this.seq;
  }

  /** The sequence allocated to this round, if any (a worker that died after it leaves a harmless gap). */
  allocated(): number | undefined {
    return this.seq;
  }

  async sign(raw: unknown): Promise<SignedManifest> {
    if (this.signed) throw new SignRefusedError(`round ${this.round.id} already had its manifest signed`);
    if (this.busy) throw new SignRefusedError(`round ${this.round.id} has a signing request in progress`);
    if (this.seq === undefined) throw new SignRefusedError(`round ${this.round.id} has no release sequence yet (ask for one first)`);
    const parsed = manifestSchema.safeParse(raw);
    if (!parsed.success) throw new SignRefusedError(`not a valid manifest: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
    const m: Manifest = parsed.data;
    if (m.model !== this.round.model) throw new SignRefusedError(`manifest is for model "${m.model}", the round's model is "${this.round.model}"`);
    if (m.release !== this.seq) throw new SignRefusedError(`manifest is for release ${m.release}, the round was allocated ${this.seq}`);
    this.busy = true;
    try {
      await this.checkArtifact(m);
      this.signed = true;
    } finally {
      this.busy = false;
    }
    return this.deps.signer.sign(m);
  }

  /** The manifest's artifact is exactly the stored file's descriptor, and its URL the cloud's own. */
  private async checkArtifact(m: Manifest): Promise<void> {
    let bytes: Uint8Array;
    try {
      bytes = await readArtifact(this.deps.dataDir, artifactRelPath(m.artifact.sha256), m.artifact.sha256);
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
