import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { Scheduler } from '../../../cloud/rounds/scheduler.js';
import { RoundConflictError, type RoundTrigger } from '../../../cloud/rounds/types.js';
import { registryDialects } from '../../helpers/dialects.js';
import { insertExamples, insertModel, newId } from './helpers.js';

const dialects = registryDialects();

/** Records starts; like RoundRunner it refuses a model that already has a round in progress. */
class FakeRounds {
  readonly started: { model: string; trigger: RoundTrigger }[] = [];
  busy = new Set<string>();
  constructor(private readonly registry: StoreRegistry) {}
  async start(model: string, trigger: RoundTrigger): Promise<{ id: string }> {
    if (this.busy.has(model)) throw new RoundConflictError(model, 'r0');
    const id = newId();
    await this.registry.q.insert(this.registry.t.rounds).values({ id, model, state: 'running', trigger, attempts: 1, startedAt: new Date().toISOString() });
    this.started.push({ model, trigger });
    return { id };
  }
}

describe.each(dialects)('Scheduler on $name', (d) => {
  let registry: StoreRegistry;
  let fake: FakeRounds;
  let clock: number;
  let scheduler: Scheduler;
  const x = () => new Float32Array(784);

  beforeEach(async (ctx) => {
    registry = await d.open(ctx);
    fake = new FakeRounds(registry);
    clock = Date.now();
    scheduler = new Scheduler({ registry, rounds: fake, now: () => clock });
    await insertModel(registry, { name: 'sched', schedule: { intervalSeconds: 60, minNewExamples: 3 } });
    await insertModel(registry, { name: 'manual-only', schedule: null });
  });
  afterEach(async () => {
    scheduler.stop();
    await d.close();
  });

  it('starts a round only when enough examples arrived since the last round started', async () => {
    await insertExamples(registry, 'sched', [x(), x()]);
    await insertExamples(registry, 'manual-only', [x(), x(), x(), x()]);
    expect(await scheduler.tick()).toEqual([]); // 2 < 3
    await insertExamples(registry, 'sched', [x()]);
    expect(await scheduler.tick()).toEqual([]); // checked less than intervalSeconds ago
    clock += 61_000;
    expect(await scheduler.tick()).toHaveLength(1);
    expect(fake.started).toEqual([{ model: 'sched', trigger: 'schedule' }]);

    // Examples from before that round's start no longer count.
    clock += 61_000;
    expect(await scheduler.tick()).toEqual([]);
    await new Promise((r) => setTimeout(r, 5));
    await insertExamples(registry, 'sched', [x(), x(), x()]);
    expect(await scheduler.newExamples('sched')).toBe(3);
    fake.busy.add('sched');
    clock += 61_000;
    expect(await scheduler.tick()).toEqual([]); // a round is in progress: skipped quietly
    fake.busy.clear();
    clock += 61_000;
    expect(await scheduler.tick()).toHaveLength(1);
  });

  it('ticks on its own timer once started', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    try {
      const s = new Scheduler({ registry, rounds: fake, tickMs: 1000, now: () => clock });
      await insertModel(registry, { name: 'zero', schedule: { intervalSeconds: 1, minNewExamples: 0 } });
      s.start();
      await vi.advanceTimersByTimeAsync(1000);
      // The tick's queries are real I/O (PostgreSQL answers over a socket): wait for it with real time.
      for (let i = 0; i < 250 && !fake.started.length; i++) await new Promise((r) => setTimeout(r, 20));
      s.stop();
      expect(fake.started.map((r) => r.model)).toEqual(['zero']);
    } finally {
      vi.useRealTimers();
    }
  });
});
