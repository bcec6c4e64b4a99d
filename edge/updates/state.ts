import { mkdir, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { formatIssues, sha256Hex, signatureSchema } from '../../shared/protocol/index.js';
import { TMP_SUFFIX, writeFileAtomic } from './fsutil.js';
import type { SlotRecord } from './types.js';

/**
 * The device's persisted update state (DESIGN.md "Edge rules"): the highest release sequence ever
 * accepted — the replay floor, never lowered, also across restarts — the deny-listed hashes, and
 * the current and previous slots. One small JSON file, replaced atomically on every change.
 */

export const STATE_FILE = 'update-state.json';
/** Oldest deny-list entries are dropped past this; a denied hash also sits below the seq floor. */
export const MAX_DENIED = 256;

const slotSchema = z.strictObject({
  sha256: sha256Hex,
  signed: z.strictObject({ manifest: z.unknown(), signature: signatureSchema }),
});

const stateSchema = z.strictObject({
  v: z.literal(1),
  /** 0 until a release was accepted. */
  highestRelease: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  denied: z.array(sha256Hex),
  current: slotSchema.nullable(),
  previous: slotSchema.nullable(),
});

export interface UpdateState {
  highestRelease: number;
  denied: readonly string[];
  current: SlotRecord | null;
  previous: SlotRecord | null;
}

export const EMPTY_STATE: UpdateState = Object.freeze({ highestRelease: 0, denied: [], current: null, previous: null });

export class UpdateStateError extends Error {
  override readonly name = 'UpdateStateError';
}

export interface UpdateStateDeps {
  dataDir: string;
}

export class UpdateStateStore {
  readonly path: string;
  private state: UpdateState = EMPTY_STATE;
  private writing: Promise<void> = Promise.resolve();

  private constructor(private readonly deps: UpdateStateDeps) {
    this.path = join(deps.dataDir, STATE_FILE);
  }

  /**
   * Loads the state file (a missing file is a fresh device). A file that exists but cannot be read
   * as valid state is an error, not a reset: silently starting from zero would lower the replay
   * floor and let an old, signed release be installed again.
   */
  static async create(deps: UpdateStateDeps): Promise<UpdateStateStore> {
    const store = new UpdateStateStore(deps);
    await mkdir(deps.dataDir, { recursive: true });
    await store.sweepTemps();
    store.state = await store.load();
    return store;
  }

  get(): UpdateState {
    return this.state;
  }

  isDenied(sha256: string): boolean {
    return this.state.denied.includes(sha256);
  }

  /** Replaces the state durably. Refuses to lower the release floor. Writes are serialised. */
  async save(next: UpdateState): Promise<void> {
    const run = this.writing.then(async () => {
      if (next.highestRelease < this.state.highestRelease) {
        throw new UpdateStateError(`refusing to lower the release floor from ${this.state.highestRelease} to ${next.highestRelease}`);
      }
      const denied = [...new Set(next.denied)].slice(-MAX_DENIED);
      const value = { v: 1 as const, highestRelease: next.highestRelease, denied, current: next.current, previous: next.previous };
      const checked = stateSchema.safeParse(value);
      if (!checked.success) throw new UpdateStateError(`refusing to write invalid update state: ${formatIssues(checked.error)}`);
      await writeFileAtomic(this.path, `${JSON.stringify(value, null, 2)}\n`);
      this.state = Object.freeze({ highestRelease: value.highestRelease, denied: Object.freeze(denied), current: value.current, previous: value.previous });
    });
    this.writing = run.catch(() => undefined);
    return run;
  }

  /** Applies `change` to the latest state and saves it. */
  async update(change: (s: UpdateState) => UpdateState): Promise<UpdateState> {
    await this.writing;
    const next = change(this.state);
    await this.save(next);
    return this.state;
  }

  async dispose(): Promise<void> {
    await this.writing;
  }

  private async load(): Promise<UpdateState> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return EMPTY_STATE;
      throw new UpdateStateError(`${this.path}: cannot read update state: ${(err as Error).message}`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new UpdateStateError(`${this.path}: corrupt update state (not JSON: ${(err as Error).message}); refusing to reset the release floor — inspect or restore the file, or delete it deliberately`);
    }
    const r = stateSchema.safeParse(json);
    if (!r.success) {
      throw new UpdateStateError(`${this.path}: corrupt update state (${formatIssues(r.error)}); refusing to reset the release floor — inspect or restore the file, or delete it deliberately`);
    }
    const { highestRelease, denied, current, previous } = r.data;
    return Object.freeze({ highestRelease, denied: Object.freeze(denied), current: current as SlotRecord | null, previous: previous as SlotRecord | null });
  }

  /** Temp files left by a crash mid-write are never the state; remove them. */
  private async sweepTemps(): Promise<void> {
    for (const name of await readdir(this.deps.dataDir)) {
      if (name.startsWith(`.${STATE_FILE}.`) && name.endsWith(TMP_SUFFIX)) await rm(join(this.deps.dataDir, name), { force: true });
    }
  }
}
