import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { LiveHub } from '../../../cloud/ui/live.js';
import { silentLogger } from '../../../shared/log/index.js';

/** The SSE feed: one timer per server, one render per watched topic per tick, whatever the number of tabs. */
describe('LiveHub', () => {
  beforeEach(() => void vi.useFakeTimers());
  afterEach(() => void vi.useRealTimers());

  it('renders a topic once per tick for all its listeners, sends only changes, and stops when nobody listens', async () => {
    const hub = new LiveHub({ intervalMs: 1000, log: silentLogger });
    let state = 'a';
    let renders = 0;
    const render = async () => {
      renders++;
      return `<p>${state}</p>`;
    };
    const got: string[][] = [[], [], []];
    const offs = got.map((g) => hub.subscribe('rollout:1', render, (html) => g.push(html)));
    await vi.advanceTimersByTimeAsync(0);
    expect(got.map((g) => g.length)).toEqual([1, 1, 1]);
    const before = renders;
    await vi.advanceTimersByTimeAsync(3000); // three ticks, nothing changed
    expect(renders - before).toBe(3); // one render per tick, not one per listener
    expect(got.map((g) => g.length)).toEqual([1, 1, 1]);
    state = 'b';
    await vi.advanceTimersByTimeAsync(1000);
    expect(got.map((g) => g.at(-1))).toEqual(['<p>b</p>', '<p>b</p>', '<p>b</p>']);
    expect(hub.listeners).toBe(3);
    for (const off of offs) off();
    expect(hub.listeners).toBe(0);
    const after = renders;
    await vi.advanceTimersByTimeAsync(5000);
    expect(renders).toBe(after); // the timer stopped
    expect(vi.getTimerCount()).toBe(0);
  });

  it('a late listener gets the current fragment at once; a failing render is logged and the rest go on', async () => {
    const errors: unknown[] = [];
    const log = { ...silentLogger, error: (o: unknown) => void errors.push(o) } as typeof silentLogger;
    const hub = new LiveHub({ intervalMs: 1000, log });
    hub.subscribe('good', async () => 'ok', () => {});
    hub.subscribe('bad', async () => Promise.reject(new Error('registry locked')), () => {});
    await vi.advanceTimersByTimeAsync(1000);
    const late: string[] = [];
    hub.subscribe('good', async () => 'ok', (h) => late.push(h));
    expect(late).toEqual(['ok']);
    expect(errors.length).toBeGreaterThan(0);
    hub.stop();
  });
});
