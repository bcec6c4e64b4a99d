import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Outbox, OutboxWriter, type WriteResult } from '../../../edge/outbox/index.js';
import { captureLogger } from '../../helpers/log.js';
import { makeExample, tempDir } from './helpers.js';

let tmp: ReturnType<typeof tempDir>;
let path: string;
const open: Outbox[] = [];
async function openOutbox(opts: { maxRows?: number; maxBytes?: number } = {}): Promise<Outbox> {
  const o = await Outbox.create({ path, maxRows: opts.maxRows ?? 1000, maxBytes: opts.maxBytes ?? 10_000_000 });
  open.push(o);
  return o;
}
/** Rows on disk, read through a second connection: what a restart would find. */
const rowsOnDisk = () => {
  const db = new Database(path, { readonly: true });
  try {
    return (db.prepare('SELECT COUNT(*) AS n FROM outbox').get() as { n: number }).n;
  } finally {
    db.close();
  }
};

beforeEach(() => {
  tmp = tempDir();
  path = join(tmp.dir, 'outbox.db');
});
afterEach(() => {
  vi.useRealTimers();
  for (const o of open.splice(0)) o.dispose();
  tmp.cleanup();
});

describe('OutboxWriter', () => {
  it('only queues on enqueue and commits the queue as one transaction after flushMs', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setImmediate', 'clearImmediate'] });
    const outbox = await openOutbox();
    const w = new OutboxWriter({ outbox, flushMs: 100, batchRows: 64 });
    for (let i = 0; i < 10; i++) expect(w.enqueue(makeExample())).toBe(true);
    expect(outbox.depth()).toBe(0);
    expect(rowsOnDisk()).toBe(0);
    expect(w.stats()).toMatchObject({ pending: 10, batches: 0 });
    vi.advanceTimersByTime(99);
    expect(rowsOnDisk()).toBe(0);
    vi.advanceTimersByTime(1);
    expect(rowsOnDisk()).toBe(10);
    expect(w.stats()).toMatchObject({ pending: 0, batches: 1, written: 10 });
    expect(outbox.counters().selected).toBe(10);
  });

  it('commits at once (next turn) when batchRows are queued, in transactions of at most batchRows', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setImmediate', 'clearImmediate'] });
    const outbox = await openOutbox();
    const w = new OutboxWriter({ outbox, flushMs: 10_000, batchRows: 8, maxPending: 64 });
    for (let i = 0; i < 20; i++) w.enqueue(makeExample());
    expect(rowsOnDisk()).toBe(0);
    vi.advanceTimersToNextTimer(); // the setImmediate, long before flushMs
    expect(rowsOnDisk()).toBe(20);
    expect(w.stats()).toMatchObject({ pending: 0, batches: 3, written: 20 });
  });

  it('write() resolves only after the commit, with the outbox result', async () => {
    const outbox = await openOutbox();
    const w = new OutboxWriter({ outbox, flushMs: 5 });
    const e = makeExample('feedback');
    const first = w.write(e);
    expect(rowsOnDisk()).toBe(0);
    await expect(first).resolves.toEqual({ status: 'added', evicted: 0 });
    expect(rowsOnDisk()).toBe(1);
    await expect(w.write(e)).resolves.toEqual({ status: 'duplicate' });
  });

  it('keeps the outbox bounds and eviction across a batch (same outcome as one add at a time)', async () => {
    const outbox = await openOutbox({ maxRows: 5 });
    const w = new OutboxWriter({ outbox, flushMs: 1_000, batchRows: 64 });
    const results: WriteResult[] = [];
    for (let i = 0; i < 8; i++) w.enqueue(makeExample('low_margin'), (r) => results.push(r));
    w.enqueue(makeExample('audit'), (r) => results.push(r)); // may not evict a hard example
    w.flush();
    expect(results.slice(0, 5).every((r) => r.status === 'added' && r.evicted === 0)).toBe(true);
    expect(results.slice(5, 8)).toEqual([1, 1, 1].map((n) => ({ status: 'added', evicted: n })));
    expect(results[8]).toEqual({ status: 'dropped', cause: 'full' });
    expect(outbox.stats()).toMatchObject({ depth: 5, selected: 9, evicted: 3, dropped: 1 });
  });

  it('refuses past maxPending, and counts and logs it', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setImmediate', 'clearImmediate'] });
    const outbox = await openOutbox();
    const { log, lines } = captureLogger();
    const w = new OutboxWriter({ outbox, flushMs: 100, batchRows: 4, maxPending: 4, log });
    const results: WriteResult[] = [];
    for (let i = 0; i < 6; i++) w.enqueue(makeExample(), (r) => results.push(r));
    expect(results).toEqual([
      { status: 'dropped', cause: 'queue_full' },
      { status: 'dropped', cause: 'queue_full' },
    ]);
    expect(w.stats()).toMatchObject({ pending: 4, queueFull: 2 });
    expect(lines().filter((l) => l.msg === 'outbox/writer refused example' && l.cause === 'queue_full')).toHaveLength(2);
    vi.advanceTimersToNextTimer();
    expect(rowsOnDisk()).toBe(4);
  });

  it('a failed commit (real SQLite error) stores nothing of the batch, counts and logs it, and the next batch goes through', async () => {
    const outbox = await openOutbox();
    const { log, lines } = captureLogger();
    const w = new OutboxWriter({ outbox, flushMs: 1_000, log });
    const other = new Database(path);
    other.exec("CREATE TRIGGER refuse BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk says no'); END;");
    const results: WriteResult[] = [];
    for (let i = 0; i < 3; i++) w.enqueue(makeExample(), (r) => results.push(r));
    w.flush();
    expect(results).toEqual(Array.from({ length: 3 }, () => ({ status: 'dropped', cause: 'write_failed' })));
    expect(w.stats()).toMatchObject({ writeFailed: 3, failedBatches: 1, batches: 0 });
    // Rolled back; the loss is then recorded in the persisted counters (this trigger only refuses inserts).
    expect(outbox.stats()).toMatchObject({ depth: 0, selected: 3, dropped: 3, lost: 3 });
    expect(w.stats().unrecorded).toBe(0);
    expect(lines().some((l) => l.msg === 'outbox/writer commit failed' && String(l.err).includes('disk says no'))).toBe(true);
    other.exec('DROP TRIGGER refuse');
    other.close();
    await expect(w.write(makeExample())).resolves.toEqual({ status: 'added', evicted: 0 });
    expect(rowsOnDisk()).toBe(1);
  });

  it('while every write fails the loss is held in memory and reported by outboxStats; the first write that works records it', async () => {
    const outbox = await openOutbox();
    const w = new OutboxWriter({ outbox, flushMs: 1_000 });
    const other = new Database(path);
    other.exec(`
      CREATE TRIGGER refuse_rows BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk says no'); END;
      CREATE TRIGGER refuse_meta_i BEFORE INSERT ON meta BEGIN SELECT RAISE(ABORT, 'disk says no'); END;
      CREATE TRIGGER refuse_meta_u BEFORE UPDATE ON meta BEGIN SELECT RAISE(ABORT, 'disk says no'); END;`);
    for (let i = 0; i < 4; i++) w.enqueue(makeExample());
    w.flush();
    expect(w.stats()).toMatchObject({ writeFailed: 4, unrecorded: 4 });
    expect(outbox.stats()).toMatchObject({ selected: 0, dropped: 0, lost: 0 });
    expect(w.outboxStats()).toMatchObject({ depth: 0, selected: 4, dropped: 4, lost: 4 });
    other.exec('DROP TRIGGER refuse_rows; DROP TRIGGER refuse_meta_i; DROP TRIGGER refuse_meta_u;');
    other.close();
    await expect(w.write(makeExample())).resolves.toEqual({ status: 'added', evicted: 0 });
    expect(w.stats().unrecorded).toBe(0);
    expect(outbox.stats()).toMatchObject({ depth: 1, selected: 5, dropped: 4, lost: 4 });
    expect(w.outboxStats()).toEqual(outbox.stats());
  });

  it('one invalid example does not sink the rest of its batch', async () => {
    const outbox = await openOutbox();
    const w = new OutboxWriter({ outbox, flushMs: 1_000 });
    const results: WriteResult[] = [];
    w.enqueue(makeExample(), (r) => results.push(r));
    w.enqueue({ ...makeExample(), id: 'not-a-uuid' }, (r) => results.push(r));
    w.enqueue(makeExample(), (r) => results.push(r));
    w.flush();
    expect(results.map((r) => r.status)).toEqual(['added', 'dropped', 'added']);
    expect(results[1]).toEqual({ status: 'dropped', cause: 'invalid' });
    expect(w.stats()).toMatchObject({ invalid: 1, written: 2 });
    expect(rowsOnDisk()).toBe(2);
  });

  it('stop() commits what is queued and refuses anything later', async () => {
    const outbox = await openOutbox();
    const w = new OutboxWriter({ outbox, flushMs: 60_000 });
    w.enqueue(makeExample());
    w.enqueue(makeExample());
    w.stop();
    expect(rowsOnDisk()).toBe(2);
    await expect(w.write(makeExample())).resolves.toEqual({ status: 'dropped', cause: 'stopped' });
    expect(rowsOnDisk()).toBe(2);
  });

  it('rejects nonsensical options', async () => {
    const outbox = await openOutbox();
    expect(() => new OutboxWriter({ outbox, batchRows: 0 })).toThrow(/batchRows/);
    expect(() => new OutboxWriter({ outbox, batchRows: 8, maxPending: 4 })).toThrow(/maxPending/);
    expect(() => new OutboxWriter({ outbox, flushMs: -1 })).toThrow(/flushMs/);
  });

  it('kill -9 loses only the examples still queued: every committed one is on disk after the crash', () => {
    // A real process crash: commit 3 batches of 10, queue 7 more, SIGKILL before the flush timer.
    const script = `
      import { Outbox, OutboxWriter } from './edge/outbox/index.ts';
      import { makeExample } from './test/unit/outbox/helpers.ts';
      const outbox = await Outbox.create({ path: process.argv[1], maxRows: 1000, maxBytes: 1e7 });
      const w = new OutboxWriter({ outbox, flushMs: 60_000, batchRows: 10 });
      for (let i = 0; i < 30; i++) w.enqueue(makeExample());
      await new Promise((r) => setImmediate(r));
      for (let i = 0; i < 7; i++) w.enqueue(makeExample());
      process.stdout.write(JSON.stringify(w.stats()));
      process.kill(process.pid, 'SIGKILL');
    `;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, path], { encoding: 'utf8', timeout: 60_000 });
    expect(r.signal, r.stderr).toBe('SIGKILL');
    expect(JSON.parse(r.stdout)).toMatchObject({ pending: 7, batches: 3, written: 30 });
    expect(rowsOnDisk()).toBe(30);
  });
});
