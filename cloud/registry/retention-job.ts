import { z } from 'zod';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import { fencedRegistry, type LeaderWriter } from '../cluster/fenced-tx.js';
import type { StoreRegistry } from './open.js';
import { enforceRetention, modelsWithExamples, type RetentionLimits, type RetentionOutcome } from './retention.js';

const limitsFields = {
  /** Rows kept per model (feedback rows not counted); null = unlimited. */
  maxRows: z.number().int().min(1).nullable(),
  /** Days an example is kept after ingest; null = forever. */
  maxAgeDays: z.number().min(0.001).nullable(),
};

/** `retention` in cloud.json. Defaults: 100,000 rows and 90 days per model, checked every 10 minutes. */
export const retentionConfigSchema = z.strictObject({
  intervalSeconds: z.number().min(1).max(86_400).default(600),
  maxRows: limitsFields.maxRows.default(100_000),
  maxAgeDays: limitsFields.maxAgeDays.default(90),
  /** Rows deleted per transaction. */
  batchRows: z.number().int().min(1).max(100_000).default(1000),
  /** Per-model overrides of `maxRows` / `maxAgeDays`. */
  models: z.record(z.string().min(1).max(128), z.strictObject({ maxRows: limitsFields.maxRows.optional(), maxAgeDays: limitsFields.maxAgeDays.optional() })).default({}),
});
export type RetentionConfig = z.infer<typeof retentionConfigSchema>;

/** The limits that apply to `model`. */
export function limitsFor(cfg: RetentionConfig, model: string): RetentionLimits {
  const o = cfg.models[model] ?? {};
  return { maxRows: o.maxRows !== undefined ? o.maxRows : cfg.maxRows, maxAgeDays: o.maxAgeDays !== undefined ? o.maxAgeDays : cfg.maxAgeDays };
}

/**
 * Runs example retention in the background: once shortly after start, then every `intervalSeconds`.
 * One pass at a time; a failed pass (a locked registry) is logged and tried again at the next tick.
 */
export class RetentionJob {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<RetentionOutcome[]> | undefined;
  private stopped = false;
  /** The writer of the epoch the job was started under (cloud/cluster/fenced-tx.ts), until `stop`. */
  private writer: LeaderWriter | undefined;
  /** The registry the passes delete through: its transactions go through `writer` when there is one. */
  private readonly reg: StoreRegistry;

  constructor(
    private readonly deps: { registry: StoreRegistry; config: RetentionConfig; log?: Logger; now?: () => Date },
  ) {
    this.reg = fencedRegistry(deps.registry, () => this.writer, 'retention.delete');
  }

  /**
   * `writer`: on a cluster, the leader's writes for the epoch it was elected under (`Replica.writer`): a
   * pass's deletes are refused (logged, counted, retried at the next tick by whoever leads) once another
   * replica took over. Without one (one process, tests) they are plain transactions.
   */
  start(firstDelayMs = 5_000, writer?: LeaderWriter): void {
    this.stopped = false;
    this.writer = writer;
    this.schedule(firstDelayMs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => undefined);
    this.writer = undefined;
  }

  /** One pass over every model with examples; resolves with what it did. Concurrent calls share a pass. */
  runOnce(): Promise<RetentionOutcome[]> {
    this.running ??= this.pass().finally(() => (this.running = undefined));
    return this.running;
  }

  private async pass(): Promise<RetentionOutcome[]> {
    const { config } = this.deps;
    const registry = this.reg;
    const log = this.deps.log ?? silentLogger;
    const out: RetentionOutcome[] = [];
    for (const model of await modelsWithExamples(registry)) {
      if (this.stopped) break;
      const r = await enforceRetention(registry, model, limitsFor(config, model), { now: this.deps.now?.() ?? new Date(), batchRows: config.batchRows });
      if (r.deletedByAge || r.deletedByRows) log.info({ ...r, limits: limitsFor(config, model) }, 'examples deleted by retention');
      if (r.skippedForRound) log.info({ model }, 'retention skipped: a round of the model is queued or running');
      out.push(r);
    }
    return out;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.runOnce()
        .catch((err: Error) => (this.deps.log ?? silentLogger).warn({ err: err.message }, 'retention pass failed; retried at the next tick'))
        .finally(() => this.schedule(this.deps.config.intervalSeconds * 1000));
    }, ms);
    this.timer.unref?.();
  }
}
