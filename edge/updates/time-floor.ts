import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import { writeFileAtomic } from './fsutil.js';

/** The persisted time floor, in the data dir. */
export const TIME_FLOOR_FILE = 'time-floor.json';

const fileSchema = z.strictObject({ v: z.literal(1), floor: z.iso.datetime({ offset: true }) });

/**
 * Time without a real-time clock (issue 10, item 3). A Pi boots with whatever time it has until NTP
 * answers, possibly 1970. The device keeps the newest `createdAt` of any signed document it accepted
 * (manifests, key sets), on disk, and never takes the clock to be earlier: expiry checks use
 * max(clock, floor). A clock far ahead is not corrected (nothing signed says how far).
 *
 * @example
 * const floor = await TimeFloor.open({ dataDir, clock: () => new Date() });
 * const now = () => floor.now();
 * await floor.observe(manifest.createdAt); // after the manifest was accepted
 */
export class TimeFloor {
  private floorMs = 0;
  private writing: Promise<void> = Promise.resolve();
  readonly path: string;
  private readonly log: Logger;
  private readonly clock: () => Date;

  private constructor(opts: { dataDir: string; clock?: () => Date; log?: Logger }) {
    this.path = join(opts.dataDir, TIME_FLOOR_FILE);
    this.clock = opts.clock ?? (() => new Date());
    this.log = opts.log ?? silentLogger;
  }

  /** Loads the floor. A missing file is no floor; an unreadable one is logged and ignored (the next accepted document sets it again). */
  static async open(opts: { dataDir: string; clock?: () => Date; log?: Logger }): Promise<TimeFloor> {
    const t = new TimeFloor(opts);
    let text: string | undefined;
    try {
      text = await readFile(t.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') t.log.error({ err, path: t.path }, 'time-floor/unreadable');
    }
    if (text !== undefined) {
      try {
        t.floorMs = Date.parse(fileSchema.parse(JSON.parse(text)).floor);
      } catch (err) {
        t.log.error({ err: (err as Error).message, path: t.path }, 'time-floor/corrupt: starting without a floor');
      }
    }
    return t;
  }

  /** The floor itself (null before any signed document was accepted). */
  get floor(): Date | null {
    return this.floorMs > 0 ? new Date(this.floorMs) : null;
  }

  /** max(clock, floor). */
  now(): Date {
    const c = this.clock();
    return c.getTime() >= this.floorMs ? c : new Date(this.floorMs);
  }

  /** Whether the clock reads earlier than the floor (a clock that has not been set yet). */
  clockBehind(): boolean {
    return this.clock().getTime() < this.floorMs;
  }

  /** Raises the floor to `createdAt` of an accepted signed document and persists it; never lowers it. */
  observe(createdAt: string): Promise<void> {
    const ms = Date.parse(createdAt);
    if (!Number.isFinite(ms) || ms <= this.floorMs) return this.writing;
    this.floorMs = ms;
    const value = { v: 1 as const, floor: new Date(ms).toISOString() };
    const run = this.writing.then(() => writeFileAtomic(this.path, `${JSON.stringify(value)}\n`));
    this.writing = run.catch((err: unknown) => this.log.error({ err }, 'time-floor/write-failed'));
    return this.writing;
  }
}
