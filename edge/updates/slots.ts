import { mkdir, open, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../../shared/log/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { SHA256_RE } from '../../shared/protocol/index.js';
import { checkFile, fsyncDir, renameDurable, tempPathFor, TMP_SUFFIX } from './fsutil.js';
import { UpdateError } from './types.js';

/**
 * Content-addressed model slots: `DATA/models/{sha256}.onnx`. A slot file only ever appears by
 * rename of a complete, fsynced, hash-checked file, so a crash never leaves a partial model under a
 * slot name. Only the current and previous slots are kept (the previous one for rollback).
 */

export const MODELS_DIR = 'models';
const SLOT_RE = /^([0-9a-f]{64})\.onnx$/;

export interface SlotStoreDeps {
  dataDir: string;
  log?: Logger;
  /** Folder under the data dir; default `models`. Shadow candidates live in their own (`shadow`, issue 13). */
  dirName?: string;
}

export interface ArtifactRef {
  sha256: string;
  bytes: number;
}

export class SlotStore {
  readonly dir: string;
  private readonly log: Logger;

  private constructor(deps: SlotStoreDeps) {
    this.dir = join(deps.dataDir, deps.dirName ?? MODELS_DIR);
    this.log = deps.log ?? silentLogger;
  }

  static async create(deps: SlotStoreDeps): Promise<SlotStore> {
    const store = new SlotStore(deps);
    await mkdir(store.dir, { recursive: true });
    for (const name of await readdir(store.dir)) {
      if (name.endsWith(TMP_SUFFIX)) await rm(join(store.dir, name), { force: true });
    }
    return store;
  }

  pathOf(sha256: string): string {
    if (!SHA256_RE.test(sha256)) throw new UpdateError('malformed_manifest', `invalid sha256 "${sha256}"`);
    return join(this.dir, `${sha256}.onnx`);
  }

  /** Hashes a slot; a missing, truncated or corrupt slot is deleted and reported as unusable. */
  async verify(ref: ArtifactRef): Promise<boolean> {
    const path = this.pathOf(ref.sha256);
    const r = await checkFile(path, ref);
    if (r === 'ok') return true;
    if (r !== 'missing') {
      this.log.warn({ sha256: ref.sha256, problem: r }, 'slot/corrupt: discarding');
      await rm(path, { force: true });
    }
    return false;
  }

  /**
   * Moves a finished download into its slot after checking length (first) and hash. The source
   * must be on the same filesystem (it is: both live under the data dir).
   */
  async adopt(ref: ArtifactRef, fromPath: string): Promise<string> {
    const r = await checkFile(fromPath, ref);
    if (r === 'missing') throw new UpdateError('download_failed', `downloaded file ${fromPath} is missing`);
    if (r !== 'ok') {
      await rm(fromPath, { force: true });
      throw new UpdateError(r, `downloaded file does not match the manifest (${r})`);
    }
    const fh = await open(fromPath, 'r+');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    const path = this.pathOf(ref.sha256);
    await renameDurable(fromPath, path);
    return path;
  }

  /** Writes bytes into a slot (temp file, fsync, rename). */
  async write(ref: ArtifactRef, data: Uint8Array): Promise<string> {
    const path = this.pathOf(ref.sha256);
    const tmp = tempPathFor(path);
    const fh = await open(tmp, 'w', 0o644);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    return this.adopt(ref, tmp);
  }

  /** The sha256 of every slot file present. */
  async list(): Promise<string[]> {
    const out: string[] = [];
    for (const name of await readdir(this.dir)) {
      const m = SLOT_RE.exec(name);
      if (m) out.push(m[1]!);
    }
    return out;
  }

  /** Deletes every slot not in `keep`; returns what was deleted. */
  async prune(keep: Iterable<string | null | undefined>): Promise<string[]> {
    const wanted = new Set([...keep].filter((s): s is string => typeof s === 'string'));
    const removed: string[] = [];
    for (const sha of await this.list()) {
      if (wanted.has(sha)) continue;
      await rm(this.pathOf(sha), { force: true });
      removed.push(sha);
    }
    if (removed.length) {
      await fsyncDir(this.dir);
      this.log.info({ removed }, 'slot/pruned');
    }
    return removed;
  }

  async dispose(): Promise<void> {}
}
