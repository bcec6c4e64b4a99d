import { and, count, desc, eq, gt, isNotNull } from 'drizzle-orm';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import type { StoreRegistry } from '../registry/open.js';
import { scheduleSchema } from './settings.js';
import { RoundConflictError, type RoundsService } from './types.js';

export interface SchedulerDeps {
  registry: StoreRegistry;
  rounds: Pick<RoundsService, 'start'>;
  log?: Logger;
  /** How often schedules are looked at; each model is still checked only every `intervalSeconds`. Default 5 s. */
  tickMs?: number;
  now?: () => number;
}

/**
 * Starts scheduled rounds: for every model with a schedule, every `schedule.intervalSeconds`, a round
 * starts when at least `schedule.minNewExamples` examples arrived since the last round of that model
 * started (any outcome). Models and schedules are re-read on every tick, so API changes apply
 * without a restart. Manual rounds go straight to RoundRunner.start and ignore all of this.
 */
export class Scheduler {
  private timer: NodeJS.Timeout | undefined;
  private readonly lastCheck = new Map<string, number>();
  private readonly log: Logger;
  private ticking = false;

  constructor(private readonly deps: SchedulerDeps) {
    this.log = deps.log ?? silentLogger;
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      this.tick().catch((err: Error) => this.log.error({ err }, 'rounds/scheduler tick failed'));
    }, this.deps.tickMs ?? 5000);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /**
   * Examples of `model` ingested after its last round started (all of them if it never had a round).
   * A round reads its hard examples some seconds after it starts, so examples that arrived in between
   * are already in its transfer set: when the last round recorded how many it used (`exampleCount`),
   * the count is also capped at "stored minus used", so they do not trigger a round that learns nothing new.
   */
  async newExamples(model: string): Promise<number> {
    const { q: db, t } = this.deps.registry;
    const { examples, rounds } = t;
    const [last] = await db.select({ startedAt: rounds.startedAt, createdAt: rounds.createdAt, exampleCount: rounds.exampleCount }).from(rounds).where(eq(rounds.model, model)).orderBy(desc(rounds.createdAt)).limit(1);
    const since = last ? (last.startedAt ?? last.createdAt) : undefined;
    const where = since ? and(eq(examples.model, model), gt(examples.ingestedAt, since)) : eq(examples.model, model);
    const [arrivedRow] = await db.select({ n: count() }).from(examples).where(where);
    const arrived = arrivedRow?.n ?? 0;
    if (last?.exampleCount == null) return arrived;
    const [storedRow] = await db.select({ n: count() }).from(examples).where(eq(examples.model, model));
    const stored = storedRow?.n ?? 0;
    return Math.min(arrived, Math.max(0, stored - last.exampleCount));
  }

  /** One pass over all scheduled models; returns the ids of rounds it started. */
  async tick(): Promise<string[]> {
    if (this.ticking) return [];
    this.ticking = true;
    const started: string[] = [];
    try {
      const now = (this.deps.now ?? Date.now)();
      const { q: db, t } = this.deps.registry;
      const rows = await db.select({ name: t.models.name, schedule: t.models.schedule }).from(t.models).where(isNotNull(t.models.schedule));
      for (const row of rows) {
        const parsed = scheduleSchema.safeParse(row.schedule);
        if (!parsed.success) {
          this.log.warn({ model: row.name, issues: parsed.error.issues }, 'rounds/scheduler: invalid schedule, skipped');
          continue;
        }
        const s = parsed.data;
        const due = await this.dueAt(row.name, s.intervalSeconds * 1000);
        if (now < due) continue;
        this.lastCheck.set(row.name, now);
        const fresh = await this.newExamples(row.name);
        if (fresh < s.minNewExamples) continue;
        try {
          const { id } = await this.deps.rounds.start(row.name, 'schedule');
          this.log.info({ model: row.name, round: id, newExamples: fresh }, 'scheduled round started');
          started.push(id);
        } catch (err) {
          if (err instanceof RoundConflictError) continue;
          this.log.error({ err, model: row.name }, 'rounds/scheduler: round not started');
        }
      }
    } finally {
      this.ticking = false;
    }
    return started;
  }

  /** After a restart there is no in-memory check time: count from the last round's start instead. */
  private async dueAt(model: string, intervalMs: number): Promise<number> {
    const checked = this.lastCheck.get(model);
    if (checked !== undefined) return checked + intervalMs;
    const { rounds } = this.deps.registry.t;
    const [last] = await this.deps.registry.q.select({ startedAt: rounds.startedAt, createdAt: rounds.createdAt }).from(rounds).where(eq(rounds.model, model)).orderBy(desc(rounds.createdAt)).limit(1);
    return last ? Date.parse(last.startedAt ?? last.createdAt) + intervalMs : 0;
  }
}
