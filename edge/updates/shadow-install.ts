import type { Logger } from '../../shared/log/index.js';
import type { Manifest } from '../../shared/protocol/index.js';
import type { ArtifactFetcher } from './fetch.js';
import { SlotStore } from './slots.js';
import { UpdateError, type RejectReason, type ShadowTarget, type UpdateOutcome } from './types.js';

/** Where shadow candidates are kept: apart from the A/B slots, and emptied at every start. */
export const SHADOW_DIR = 'shadow';

export interface ShadowInstallerDeps {
  slots: SlotStore;
  fetcher: ArtifactFetcher;
  target: ShadowTarget;
  log: Logger;
  now: () => Date;
  /** The update manager's checks that need no download (stale, jump, expired, denied, input, running). */
  precheck: (m: Manifest) => UpdateOutcome | null;
  reject: (m: Manifest, reason: RejectReason, detail: string) => UpdateOutcome;
}

/**
 * Installs a `manifest.shadow` release (issue 13 item 4) beside the running model: the same checks as
 * a normal release (signature and assignment are checked by the caller), downloaded into the `shadow`
 * folder, loaded by the ShadowTarget. It never touches the update state: the release floor, the key
 * floors, the current and previous slots and the trial stay as they are, so the switch (the same
 * bytes re-issued at a new sequence) and any other release are still accepted.
 */
export class ShadowInstaller {
  private chain: Promise<unknown> = Promise.resolve();
  private readonly inProgress = new Set<string>();

  private constructor(private readonly deps: ShadowInstallerDeps) {
    // The runner dropped a candidate (expired, superseded, switched): its file goes too.
    deps.target.onDropped((sha) => void this.forget(sha));
  }

  /** Opens the shadow folder and empties it: a restart ends any shadow (the device stays on its model). */
  static async create(d: Omit<ShadowInstallerDeps, 'slots'> & { dataDir: string }): Promise<ShadowInstaller> {
    const slots = await SlotStore.create({ dataDir: d.dataDir, log: d.log, dirName: SHADOW_DIR });
    const removed = await slots.prune([]);
    if (removed.length) d.log.warn({ removed, reason: 'restart' }, 'shadow/dropped');
    return new ShadowInstaller({ ...d, slots });
  }

  /** The candidate's file when `sha256` is the shadow's and intact (the switch then needs no download). */
  async fileOf(ref: { sha256: string; bytes: number }): Promise<string | undefined> {
    return (await this.deps.slots.verify(ref)) ? this.deps.slots.pathOf(ref.sha256) : undefined;
  }

  accept(m: Manifest): Promise<UpdateOutcome> {
    const sha = m.artifact.sha256;
    const until = Date.parse(m.shadow!.until);
    if (this.deps.target.sha256 === sha || this.inProgress.has(sha)) return Promise.resolve({ status: 'ignored', detail: `release ${m.release} is already running as a shadow` });
    const early = this.deps.precheck(m);
    if (early) return Promise.resolve(early);
    if (until <= this.deps.now().getTime()) return Promise.resolve(this.deps.reject(m, 'expired', `shadow window ended at ${m.shadow!.until}`));
    this.inProgress.add(sha);
    const run = this.chain.then(() => this.install(m)).finally(() => this.inProgress.delete(sha));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async install(m: Manifest): Promise<UpdateOutcome> {
    const sha = m.artifact.sha256;
    let path: string;
    try {
      path = (await this.fileOf(m.artifact)) ?? (await this.download(m));
    } catch (err) {
      const reason: RejectReason = err instanceof UpdateError ? err.reason : 'download_failed';
      return this.deps.reject(m, reason, `shadow: ${(err as Error).message}`);
    }
    // The window may have closed during the download.
    if (Date.parse(m.shadow!.until) <= this.deps.now().getTime()) {
      await this.forget(sha);
      return this.deps.reject(m, 'expired', `shadow window ended at ${m.shadow!.until} during the download`);
    }
    try {
      await this.deps.target.load(path, m);
    } catch (err) {
      await this.forget(sha);
      const reason: RejectReason = (err as { reason?: unknown }).reason === 'self_test_failed' ? 'self_test_failed' : 'load_failed';
      return this.deps.reject(m, reason, `shadow: ${(err as Error).message}`);
    }
    await this.deps.slots.prune([sha]);
    this.deps.log.info({ release: m.release, sha256: sha, until: m.shadow!.until }, 'updates/shadowing');
    return { status: 'shadowing', release: m.release, sha256: sha };
  }

  private async download(m: Manifest): Promise<string> {
    const got = await this.deps.fetcher.fetch(m.artifact, {});
    const path = await this.deps.slots.adopt(m.artifact, got.path);
    await this.deps.fetcher.forget(m.artifact.sha256);
    return path;
  }

  /** Deletes every shadow file but the live candidate's (`sha256` is the one that ended). */
  private async forget(sha256: string): Promise<void> {
    const keep = this.deps.target.sha256;
    if (keep === sha256) return;
    await this.deps.slots.prune([keep]).catch((err: unknown) => this.deps.log.warn({ err }, 'shadow/prune-failed'));
  }
}
