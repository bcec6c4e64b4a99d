/** SerialRetry (device events acknowledged only once written): order, transient retries, permanent errors, stop. */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { SerialRetry, TransientError, isTransientDbError } from '../../../cloud/fleet/serial-retry.js';
import { silentLogger } from '../../../shared/log/index.js';

const busy = () => Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' });

describe('SerialRetry', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('runs at once when idle; retries a transient failure with backoff while later jobs wait, in order', async () => {
    vi.useFakeTimers();
    let retries = 0;
    const q = new SerialRetry({ log: silentLogger, what: 'test', onRetry: () => retries++, retry: { initialMs: 100, maxMs: 100, random: () => 0 } });
    const ran: string[] = [];
    let failures = 2;
    const first = q.run(() => {
      if (failures-- > 0) throw busy();
      ran.push('first');
      return 1;
    });
    const second = q.run(() => (ran.push('second'), 2));
    expect(ran).toEqual([]); // the second waits behind the failing first
    await vi.advanceTimersByTimeAsync(49);
    expect(ran).toEqual([]);
    await vi.advanceTimersByTimeAsync(60);
    await vi.advanceTimersByTimeAsync(60);
    expect(await first).toBe(1);
    expect(await second).toBe(2);
    expect(ran).toEqual(['first', 'second']);
    expect(retries).toBe(2);
    let sync = false;
    void q.run(() => (sync = true));
    expect(sync).toBe(true); // idle again: synchronous
  });

  it('rejects a job whose error no retry can fix, and the next job still runs; after stop() nothing settles', async () => {
    const q = new SerialRetry({ log: silentLogger, what: 'test' });
    await expect(q.run(() => { throw new Error('CHECK constraint failed'); })).rejects.toThrow(/CHECK/);
    expect(await q.run(() => 'next')).toBe('next');
    expect(isTransientDbError(busy())).toBe(true);
    expect(isTransientDbError(new TransientError('x'))).toBe(true);
    expect(isTransientDbError(Object.assign(new Error('x'), { code: 'SQLITE_CONSTRAINT' }))).toBe(false);
    let settled = false;
    const p = q.run(() => { throw busy(); }).finally(() => (settled = true));
    q.stop();
    await new Promise((r) => setTimeout(r, 300));
    expect(settled).toBe(false);
    void p;
  });
});
