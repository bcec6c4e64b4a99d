import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Registry } from '../../../cloud/registry/db.js';
import { rounds } from '../../../cloud/registry/schema.js';
import { Scheduler } from '../../../cloud/rounds/scheduler.js';
import { RoundConflictError, type RoundTrigger } from '../../../cloud/rounds/types.js';
import { insertExamples, insertModel, newId, openRegistry, tempDir } from './helpers.js';

/** Records starts; like RoundRunner it refuses a model that already has a round in progress. */
class FakeRounds {
  readonly started: { model: string; trigger: RoundTrigger }[] = [];
  busy = new Set<string>();
  constructor(private readonly registry: Registry) {}
  async start(model: string, trigger: RoundTrigger): Promise<{ id: string }> {
    if (this.busy.has(model)) throw new RoundConflictError(model, 'r0');
    const id = newId();
    this.registry.db.insert(rounds).values({ id, model, state: 'running', trigger, attempts: 1, startedAt: new Date().toISOString() }).run();
    this.started.push({ model, trigger });
    return { id };
  }
}

describe('Scheduler', () => {
  let tmp: ReturnType<typeof tempDir>;
  let registry: Registry;
  let fake: FakeRounds;
  let clock: number;
  let scheduler: Scheduler;
  const x = () => new Float32Array(784);

  beforeEach(() => {
    tmp = tempDir();
    registry = openRegistry(tmp.dir);
    fake = new FakeRounds(registry);
    clock = Date.now();
    scheduler = new Scheduler({ registry, rounds: fake, now: () => clock });
    insertModel(registry, { name: 'sched', schedule: { intervalSeconds: 60, minNewExamples: 3 } });
    insertModel(registry, { name: 'manual-only', schedule: null });
  });
  afterEach(() => {
    scheduler.stop();
    registry.dispose();
    tmp.cleanup();
  });

  it('starts a round only when enough examples arrived since the last round started', async () => {
    insertExamples(registry, 'sched', [x(), x()]);
    insertExamples(registry, 'manual-only', [x(), x(), x(), x()]);
    expect(await scheduler.tick()).toEqual([]); // 2 < 3
    insertExamples(registry, 'sched', [x()]);
    expect(await scheduler.tick()).toEqual([]); // checked less than intervalSeconds ago
    clock += 61_000;
    expect(await scheduler.tick()).toHaveLength(1);
    expect(fake.started).toEqual([{ model: 'sched', trigger: 'schedule' }]);

    // Examples from before that round's start no longer count.
    clock += 61_000;
    expect(await scheduler.tick()).toEqual([]);
    await new Promise((r) => setTimeout(r, 5));
    insertExamples(registry, 'sched', [x(), x(), x()]);
    expect(scheduler.newExamples('sched')).toBe(3);
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
      insertModel(registry, { name: 'zero', schedule: { intervalSeconds: 1, minNewExamples: 0 } });
      s.start();
      await vi.advanceTimersByTimeAsync(1000);
      s.stop();
      expect(fake.started.map((r) => r.model)).toEqual(['zero']);
    } finally {
      vi.useRealTimers();
    }
  });
});
