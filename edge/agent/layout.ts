import { lstat, mkdir, readdir, readlink, rename, rm, symlink } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { fsyncDir } from '../updates/fsutil.js';

/**
 * The agent layout under the data dir (issue 14; the launcher deploy/apprentice-launcher.sh reads the
 * same): `<root>/<version>/` complete version directories, `<root>/<version>.partial/` one being
 * unpacked, `<root>/current` a symlink naming the version to run (a bare version name, or the absolute
 * path of the installer's bundle, /opt/apprentice, before the first update), `<root>/marker` the
 * start-time marker (marker.ts). Nothing else of the data dir (outbox, model slots, state) is inside.
 */
export const CURRENT_LINK = 'current';
export const PARTIAL_SUFFIX = '.partial';
/** Names in the agent root that are not versions: the link, the marker, the agent floor, the downloads. */
const NOT_VERSIONS: ReadonlySet<string> = new Set(['current', 'marker', 'agent-state.json', 'downloads']);
const TMP_LINK_PREFIX = '.current.tmp.';

export class AgentLayout {
  constructor(readonly root: string) {}

  /** Where a version lives (a link target as stored in `current` or the marker). */
  dirOf(target: string): string {
    return isAbsolute(target) ? target : join(this.root, target);
  }

  versionDir(version: string): string {
    return join(this.root, version);
  }

  partialDir(version: string): string {
    return join(this.root, `${version}${PARTIAL_SUFFIX}`);
  }

  async ensure(): Promise<void> {
    await mkdir(this.root, { recursive: true });
  }

  /** The `current` link's target as written (a version name or an absolute path); null when absent. */
  async current(): Promise<string | null> {
    try {
      return await readlink(join(this.root, CURRENT_LINK));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'EINVAL') return null;
      throw err;
    }
  }

  /**
   * Points `current` at `target` atomically: a symlink under a temp name, then rename(2) over the old
   * link (never unlink + symlink, which leaves a moment without one), then the directory is fsynced.
   */
  async switchTo(target: string, beforeRename?: () => void): Promise<void> {
    await this.ensure();
    const tmp = join(this.root, `${TMP_LINK_PREFIX}${process.pid}`);
    await rm(tmp, { force: true });
    await symlink(target, tmp);
    beforeRename?.();
    await rename(tmp, join(this.root, CURRENT_LINK));
    await fsyncDir(this.root);
  }

  /** Version directories present (complete ones only; `.partial` and temp links are not versions). */
  async versions(): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const out: string[] = [];
    for (const n of names) {
      if (NOT_VERSIONS.has(n) || n.startsWith('.') || n.endsWith(PARTIAL_SUFFIX)) continue;
      if ((await lstat(join(this.root, n))).isDirectory()) out.push(n);
    }
    return out.sort();
  }

  /**
   * Deletes every version directory not named in `keep` (link targets), every unfinished `.partial`
   * and stray temp link. Returns the deleted version names.
   */
  async prune(keep: Iterable<string | null | undefined>): Promise<string[]> {
    const wanted = new Set([...keep].filter((k): k is string => !!k && !isAbsolute(k)));
    const removed: string[] = [];
    for (const v of await this.versions()) {
      if (wanted.has(v)) continue;
      await rm(this.versionDir(v), { recursive: true, force: true });
      removed.push(v);
    }
    await this.sweep();
    return removed;
  }

  /** Leftovers of a crash: `.partial` directories and temp links. */
  async sweep(): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    for (const n of names) {
      if (n.endsWith(PARTIAL_SUFFIX) || n.startsWith(TMP_LINK_PREFIX)) await rm(join(this.root, n), { recursive: true, force: true });
    }
  }
}
