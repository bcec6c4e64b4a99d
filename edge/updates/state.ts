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
  /**
   * The release on trial: switched to (or being loaded) but not yet through its health window. Found
   * at start, it counts as a crash (issue 10, crash-loop guard). Absent in files of older daemons.
   */
  trial: z.strictObject({ sha256: sha256Hex, model: z.string().max(128), release: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER), crashes: z.number().int().min(0).max(1000) }).nullable().optional(),
  /** The highest release accepted from each signing key (a revoked key's floor can be reset from these). */
  keyFloors: z.record(z.string().regex(/^[0-9a-f]{16}$/), z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)).optional(),
});

export interface UpdateState {
  highestRelease: number;
  denied: readonly string[];
  current: SlotRecord | null;
  previous: SlotRecord | null;
  /** The release on trial (not committed by the health gate yet) and how many starts found it so. */
  trial: TrialRecord | null;
  /** Highest release accepted per signing key id. */
  keyFloors: Readonly<Record<string, number>>;
}

/** What `save` takes: the newer fields may be left out (kept empty). */
export type UpdateStateInput = Omit<UpdateState, 'trial' | 'keyFloors'> & Partial<Pick<UpdateState, 'trial' | 'keyFloors'>>;

export interface TrialRecord {
  sha256: string;
  model: string;
  release: number;
  crashes: number;
}

export const EMPTY_STATE: UpdateState = Object.freeze({ highestRelease: 0, denied: [], current: null, previous: null, trial: null, keyFloors: {} });

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

  /**
   * Replaces the state durably. Refuses to lower the release floor unless `lowerFloor` says why (a
   * root-signed revocation of the key behind it: DESIGN.md "Edge rules"). Writes are serialised.
   */
  async save(next: UpdateStateInput, { lowerFloor }: { lowerFloor?: string } = {}): Promise<void> {
    const run = this.writing.then(async () => {
      if (next.highestRelease < this.state.highestRelease && !lowerFloor) {
        throw new UpdateStateError(`refusing to lower the release floor from ${this.state.highestRelease} to ${next.highestRelease}`);
      }
      const denied = [...new Set(next.denied)].slice(-MAX_DENIED);
      const value = { v: 1 as const, highestRelease: next.highestRelease, denied, current: next.current, previous: next.previous, trial: next.trial ?? null, keyFloors: { ...next.keyFloors } };
      const checked = stateSchema.safeParse(value);
      if (!checked.success) throw new UpdateStateError(`refusing to write invalid update state: ${formatIssues(checked.error)}`);
      await writeFileAtomic(this.path, `${JSON.stringify(value, null, 2)}\n`);
      this.state = Object.freeze({ highestRelease: value.highestRelease, denied: Object.freeze(denied), current: value.current, previous: value.previous, trial: value.trial, keyFloors: Object.freeze(value.keyFloors) });
    });
    this.writing = run.catch(() => undefined);
    return run;
  }

  /** Applies `change` to the latest state and saves it. */
  async update(change: (s: UpdateState) => UpdateState, opts?: { lowerFloor?: string }): Promise<UpdateState> {
    await this.writing;
    const next = change(this.state);
    await this.save(next, opts);
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
    const { highestRelease, denied, current, previous, trial = null, keyFloors = {} } = r.data;
    return Object.freeze({ highestRelease, denied: Object.freeze(denied), current: current as SlotRecord | null, previous: previous as SlotRecord | null, trial, keyFloors: Object.freeze(keyFloors) });
  }

  /** Temp files left by a crash mid-write are never the state; remove them. */
  private async sweepTemps(): Promise<void> {
    for (const name of await readdir(this.deps.dataDir)) {
      if (name.startsWith(`.${STATE_FILE}.`) && name.endsWith(TMP_SUFFIX)) await rm(join(this.deps.dataDir, name), { force: true });
    }
  }
}
