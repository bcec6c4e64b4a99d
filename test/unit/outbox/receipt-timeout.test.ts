/** The adaptive receipt wait (issue 9 overflow drill): latency floor, per-row doubling, cap, bounded memory. */
import { describe, expect, it } from 'vitest';
import { ReceiptTimeouts } from '../../../edge/outbox/receipt-timeout.js';

describe('ReceiptTimeouts', () => {
  it('waits the base until receipts are slow, then 3x the latency; a slow sample counts at once, fast ones decay it slowly', () => {
    const t = new ReceiptTimeouts({ baseMs: 1_000, maxMs: 100_000 });
    expect(t.waitMs(['a'])).toBe(1_000);
    t.observe(200);
    expect(t.waitMs(['a'])).toBe(1_000); // 3 × 200 < base
    t.observe(10_000);
    expect(t.latencyMs).toBe(10_000);
    expect(t.waitMs(['a'])).toBe(30_000);
    t.observe(0);
    expect(t.latencyMs).toBe(9_000);
    t.observe(-5);
    t.observe(Number.NaN);
    expect(t.latencyMs).toBe(9_000);
  });

  it('doubles per timeout of the same rows (the batch takes its most-resent row), caps at maxMs, forgets settled rows', () => {
    const t = new ReceiptTimeouts({ baseMs: 1_000, maxMs: 5_000 });
    t.timedOut(['a', 'b']);
    expect(t.waitMs(['a'])).toBe(2_000);
    t.timedOut(['a']);
    expect(t.waitMs(['a', 'c'])).toBe(4_000);
    expect(t.waitMs(['b', 'c'])).toBe(2_000);
    t.timedOut(['a']);
    expect(t.waitMs(['a'])).toBe(5_000);
    t.settled(['a', 'b']);
    expect(t.waitMs(['a', 'b'])).toBe(1_000);
    expect(t.tracked).toBe(0);
  });

  it('remembers at most maxTrackedRows rows, forgetting the least recently timed out; jitter is in [1, 1.5)', () => {
    const t = new ReceiptTimeouts({ baseMs: 1_000, maxMs: 60_000, maxTrackedRows: 2, random: () => 0.999 });
    t.timedOut(['a']);
    t.timedOut(['b']);
    t.timedOut(['a']);
    t.timedOut(['c']);
    expect(t.tracked).toBe(2);
    expect(t.waitMs(['b'])).toBe(1_000); // forgotten
    expect(t.waitMs(['a'])).toBe(4_000);
    expect(t.jitter()).toBeGreaterThanOrEqual(1);
    expect(t.jitter()).toBeLessThan(1.5);
  });
});
