import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Outbox, OutboxError, kindOf } from '../../../edge/outbox/index.js';
import { makeExample, rowBytes, tempDir } from './helpers.js';

let tmp: ReturnType<typeof tempDir>;
let path: string;
const open: Outbox[] = [];
async function openOutbox(opts: { maxRows?: number; maxBytes?: number } = {}): Promise<Outbox> {
  const o = await Outbox.create({ path, maxRows: opts.maxRows ?? 1000, maxBytes: opts.maxBytes ?? 10_000_000 });
  open.push(o);
  return o;
}
const ids = (o: Outbox) => o.peek({ limit: 1_000_000 }).map((r) => r.id);
const invariant = (o: Outbox) => {
  const s = o.stats();
  expect(s.selected).toBe(s.depth + s.published + s.evicted + s.dropped);
};

beforeEach(() => {
  tmp = tempDir();
  path = join(tmp.dir, 'nested', 'outbox.db');
});
afterEach(() => {
  for (const o of open.splice(0)) o.dispose();
  tmp.cleanup();
});

describe('Outbox basics', () => {
  it('creates the file in WAL mode and stores rows with kind and bytes', async () => {
    const o = await openOutbox();
    const e = makeExample('high_entropy');
    expect(o.add(e)).toEqual({ status: 'added', evicted: 0 });
    expect(o.depth()).toBe(1);
    expect(o.bytes()).toBe(rowBytes(e));
    const [row] = o.peek({ limit: 10 });
    expect(row).toMatchObject({ id: e.id, kind: 'hard', bytes: rowBytes(e), example: e });
    const db = new Database(path, { readonly: true });
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    db.close();
  });

  it('is idempotent on the example UUID', async () => {
    const o = await openOutbox();
    const e = makeExample();
    o.add(e);
    expect(o.add({ ...e, reason: 'audit' })).toEqual({ status: 'duplicate' });
    expect(o.depth()).toBe(1);
    expect(o.counters().selected).toBe(1);
  });

  it('rejects an invalid example with OutboxError', async () => {
    const o = await openOutbox();
    expect(() => o.add({ ...makeExample(), id: 'not-a-uuid' })).toThrow(OutboxError);
    expect(o.depth()).toBe(0);
  });

  it('maps reasons to kinds', () => {
    expect(['audit', 'feedback', 'low_confidence', 'low_margin', 'high_entropy'].map((r) => kindOf(r as never))).toEqual(['audit', 'feedback', 'hard', 'hard', 'hard']);
  });

  it('notifies onAdded listeners for new rows only', async () => {
    const o = await openOutbox({ maxBytes: 1000 });
    let calls = 0;
    const off = o.onAdded(() => calls++);
    const e = makeExample();
    o.add(e);
    o.add(e); // duplicate
    o.add(makeExample('audit', 4096)); // too large → dropped
    expect(calls).toBe(1);
    off();
    o.add(makeExample());
    expect(calls).toBe(1);
  });

  it('acknowledge deletes rows, counts them as published and ignores unknown ids', async () => {
    const o = await openOutbox();
    const a = makeExample();
    const b = makeExample();
    o.add(a);
    o.add(b);
    expect(o.acknowledge([a.id, a.id, '00000000-0000-4000-8000-000000000000'])).toBe(1);
    expect(ids(o)).toEqual([b.id]);
    expect(o.counters().published).toBe(1);
    expect(o.bytes()).toBe(rowBytes(b));
    invariant(o);
  });

  it('throws after dispose', async () => {
    const o = await openOutbox();
    o.dispose();
    expect(() => o.add(makeExample())).toThrow(/disposed/);
    expect(o.closed).toBe(true);
  });
});

describe('Outbox bounds and eviction', () => {
  it('row bound: a hard example evicts audit oldest first; feedback evicts audit, then older feedback, never hard examples', async () => {
    const o = await openOutbox({ maxRows: 6 });
    const f1 = makeExample('feedback');
    const h1 = makeExample('low_confidence');
    const a1 = makeExample('audit');
    const h2 = makeExample('low_margin');
    const a2 = makeExample('audit');
    const f2 = makeExample('feedback');
    for (const e of [f1, h1, a1, h2, a2, f2]) expect(o.add(e).status).toBe('added');

    const f3 = makeExample('feedback');
    expect(o.add(f3)).toEqual({ status: 'added', evicted: 1 });
    expect(ids(o)).toEqual([f1.id, h1.id, h2.id, a2.id, f2.id, f3.id]); // a1 gone
    const h3 = makeExample('high_entropy');
    expect(o.add(h3)).toEqual({ status: 'added', evicted: 1 }); // a hard example evicts audit (a2)
    expect(ids(o)).not.toContain(a2.id);
    o.add(makeExample('feedback')); // no audit left: the oldest feedback (f1) goes, not a hard example
    expect(ids(o)).not.toContain(f1.id);
    for (let i = 0; i < 5; i++) o.add(makeExample('feedback'));
    expect(ids(o).filter((id) => [h1.id, h2.id, h3.id].includes(id))).toEqual([h1.id, h2.id, h3.id]);
    expect(o.depth()).toBe(6);
    expect(o.counters().evicted).toBe(8);
    invariant(o);
  });

  it('byte bound: a bigger row evicts as many oldest rows of lower class as it needs', async () => {
    const small = () => makeExample('audit', 64);
    const s = [small(), small(), small()];
    const size = rowBytes(s[0]!);
    const o = await openOutbox({ maxBytes: size * 3 + 10 });
    for (const e of s) o.add(e);
    const big = makeExample('low_confidence', 128); // about twice a small one
    expect(rowBytes(big)).toBeGreaterThan(size + 10);
    expect(rowBytes(big)).toBeLessThanOrEqual(size * 2 + 10);
    expect(o.add(big)).toEqual({ status: 'added', evicted: 2 });
    expect(ids(o)).toEqual([s[2]!.id, big.id]);
    expect(o.bytes()).toBe(size + rowBytes(big));
    expect(o.bytes()).toBeLessThanOrEqual(size * 3 + 10);
    invariant(o);
  });

  it('never evicts a more valuable class: the new row is dropped instead, nothing evicted', async () => {
    const o = await openOutbox({ maxRows: 2 });
    const h = [makeExample('low_margin'), makeExample('high_entropy')];
    for (const e of h) o.add(e);
    expect(o.add(makeExample('audit'))).toEqual({ status: 'dropped', cause: 'full' });
    expect(ids(o)).toEqual(h.map((e) => e.id));

    const p = await Outbox.create({ path: join(tmp.dir, 'fb.db'), maxRows: 1, maxBytes: 1e6 });
    open.push(p);
    const fb = makeExample('feedback');
    p.add(fb);
    expect(p.add(makeExample('low_confidence')).status).toBe('dropped');
    expect(p.add(makeExample('feedback'))).toEqual({ status: 'added', evicted: 1 }); // feedback may replace feedback
    expect(o.counters()).toMatchObject({ dropped: 1, evicted: 0 });
    invariant(o);
    invariant(p);
  });

  it('mixed byte pressure that lower classes cannot relieve drops the new row and keeps the old ones', async () => {
    const a = makeExample('audit', 16);
    const h = makeExample('low_confidence', 64);
    const o = await openOutbox({ maxBytes: rowBytes(a) + rowBytes(h) + 5 });
    o.add(a);
    o.add(h);
    // Needs more room than the single audit row frees, and may not touch the hard one.
    expect(o.add(makeExample('audit', 64)).status).toBe('dropped');
    expect(ids(o)).toEqual([a.id, h.id]);
  });

  it('refuses an example larger than maxBytes on its own, counted as dropped', async () => {
    const o = await openOutbox({ maxBytes: 2000 });
    o.add(makeExample('audit'));
    const huge = makeExample('feedback', 2000);
    expect(o.add(huge)).toEqual({ status: 'dropped', cause: 'too_large' });
    expect(o.depth()).toBe(1);
    expect(o.counters()).toMatchObject({ selected: 2, dropped: 1, evicted: 0 });
  });
});

describe('Outbox persistence', () => {
  it('survives close/reopen with nothing lost, in the same order, counters intact', async () => {
    const o = await openOutbox({ maxRows: 50 });
    const all = Array.from({ length: 60 }, (_, i) => makeExample(i % 3 === 0 ? 'audit' : 'low_confidence'));
    for (const e of all) o.add(e);
    const before = o.peek({ limit: 1000 });
    expect(before).toHaveLength(50);
    expect(o.acknowledge(before.slice(0, 5).map((r) => r.id))).toBe(5);
    const stats = o.stats();
    expect(stats).toMatchObject({ depth: 45, selected: 60, evicted: 10, published: 5, dropped: 0 });
    o.dispose();

    const r = await openOutbox({ maxRows: 50 });
    expect(r.stats()).toEqual(stats);
    expect(r.peek({ limit: 1000 }).map((x) => x.example)).toEqual(before.slice(5).map((x) => x.example));
    invariant(r);
  });

  it('persists evicted and dropped counters across reopen and keeps counting', async () => {
    const o = await openOutbox({ maxRows: 2, maxBytes: 3000 });
    for (let i = 0; i < 5; i++) o.add(makeExample('audit'));
    o.add(makeExample('audit', 4000)); // too large
    expect(o.counters()).toEqual({ selected: 6, published: 0, evicted: 3, dropped: 1, refused: 0, lost: 0 });
    o.dispose();
    const r = await openOutbox({ maxRows: 2, maxBytes: 3000 });
    expect(r.counters()).toEqual({ selected: 6, published: 0, evicted: 3, dropped: 1, refused: 0, lost: 0 });
    r.add(makeExample('audit'));
    expect(r.counters().evicted).toBe(4);
    expect(r.depth()).toBe(2);
  });

  it('a smaller bound after restart is applied on the next add', async () => {
    const o = await openOutbox({ maxRows: 10 });
    for (let i = 0; i < 10; i++) o.add(makeExample('audit'));
    o.dispose();
    const r = await openOutbox({ maxRows: 4 });
    expect(r.depth()).toBe(10);
    expect(r.add(makeExample('audit'))).toEqual({ status: 'added', evicted: 7 });
    expect(r.depth()).toBe(4);
  });

  it('drops (and counts) a stored row that no longer parses instead of blocking the queue', async () => {
    const o = await openOutbox();
    const good = makeExample();
    const bad = makeExample();
    o.add(bad);
    o.add(good);
    o.dispose();
    const db = new Database(path);
    db.prepare('UPDATE outbox SET payload = ? WHERE id = ?').run('{"id":"broken"}', bad.id);
    db.close();
    const r = await openOutbox();
    expect(r.peek({ limit: 10 }).map((x) => x.id)).toEqual([good.id]);
    expect(r.depth()).toBe(1);
    expect(r.counters().dropped).toBe(1);
    invariant(r);
  });

  it('refuses a file written by a newer schema version', async () => {
    const o = await openOutbox();
    o.dispose();
    const db = new Database(path);
    db.pragma('user_version = 99');
    db.close();
    await expect(Outbox.create({ path, maxRows: 10, maxBytes: 10_000 })).rejects.toThrow(/newer/);
  });
});

describe('Outbox.peek', () => {
  it('returns oldest first within limit and byte budget, but always at least one row', async () => {
    const o = await openOutbox();
    const es = Array.from({ length: 10 }, () => makeExample('low_margin', 32));
    for (const e of es) o.add(e);
    const b = rowBytes(es[0]!);
    expect(o.peek({ limit: 4 }).map((r) => r.id)).toEqual(es.slice(0, 4).map((e) => e.id));
    expect(o.peek({ limit: 100, maxBytes: 3 * (b + 1) }).length).toBe(3);
    expect(o.peek({ limit: 100, maxBytes: 3 * (b + 1) - 1 }).length).toBe(2);
    expect(o.peek({ limit: 100, maxBytes: 10 }).length).toBe(1);
    expect(o.depth()).toBe(10); // peek does not remove
  });
});
