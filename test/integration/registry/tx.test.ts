import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { q, type TxDb, type Tables } from '../../../cloud/registry/tx.js';
import { registryDialects } from '../../helpers/dialects.js';

const dialects = registryDialects();

/** Reads the counter in meta and writes it back plus one: a lost update shows as a smaller final count. */
function* increment(tx: TxDb, t: Tables, log?: string[], who?: string) {
  const [row] = yield* q(tx.select().from(t.meta).where(eq(t.meta.key, 'counter')));
  log?.push(`${who} read`);
  const next = Number(row?.value ?? 0) + 1;
  yield* q(tx.insert(t.meta).values({ key: 'counter', value: String(next) }).onConflictDoUpdate({ target: t.meta.key, set: { value: String(next) } }));
  log?.push(`${who} wrote`);
  return next;
}

async function counter(reg: StoreRegistry): Promise<number> {
  const [row] = await reg.q.select().from(reg.t.meta).where(eq(reg.t.meta.key, 'counter'));
  return Number(row?.value ?? 0);
}

describe.each(dialects)('registry transactions on $name', (d) => {
  let reg: StoreRegistry;
  beforeEach(async (ctx) => {
    reg = await d.open(ctx);
  });
  afterEach(() => d.close());

  it('commits every statement of a body and returns its typed value', async () => {
    const got = await reg.tx(function* (tx, t) {
      const [a] = yield* q(tx.insert(t.auditLog).values({ at: '2026-11-30T10:00:00.000Z', actor: 'cli', action: 'x', detail: { n: 1 } }).returning());
      const rows = yield* q(tx.select().from(t.auditLog).where(eq(t.auditLog.id, a!.id)));
      return { id: a!.id, detail: rows[0]!.detail };
    });
    expect(got).toEqual({ id: 1, detail: { n: 1 } });
    expect(reg.dialect).toBe(d.name);
  });

  it('rolls back everything when the body throws, and when a statement fails', async () => {
    await expect(
      reg.tx(function* (tx, t) {
        yield* q(tx.insert(t.meta).values({ key: 'a', value: '1' }));
        yield* increment(tx, t);
        throw new Error('changed my mind');
      }),
    ).rejects.toThrow('changed my mind');
    await reg.q.insert(reg.t.meta).values({ key: 'taken', value: 'x' });
    await expect(
      reg.tx(function* (tx, t) {
        yield* q(tx.insert(t.meta).values({ key: 'b', value: '1' }));
        yield* q(tx.insert(t.meta).values({ key: 'taken', value: 'again' })); // primary key violation
      }),
    ).rejects.toThrow();
    const keys = (await reg.q.select().from(reg.t.meta)).map((r) => r.key);
    expect(keys).toEqual(['taken']);
    expect(await counter(reg)).toBe(0);
  });

  it('loses no update under concurrent read-then-write bodies, from two connections', async () => {
    const other = await d.openAnother();
    const runs = Array.from({ length: 12 }, (_, i) => (i % 2 ? reg : other).tx((tx, t) => increment(tx, t)));
    const results = await Promise.all(runs);
    expect(await counter(reg)).toBe(12);
    expect([...results].sort((a, b) => a - b)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
  });
});

describe('registry transactions on sqlite only', () => {
  const [sqlite] = registryDialects();
  afterEach(() => sqlite!.close());

  it('never interleaves two bodies: each runs to its end synchronously', async (ctx) => {
    const reg = await sqlite!.open(ctx);
    const log: string[] = [];
    await Promise.all([reg.tx((tx, t) => increment(tx, t, log, 'A')), reg.tx((tx, t) => increment(tx, t, log, 'B'))]);
    expect(log).toEqual(['A read', 'A wrote', 'B read', 'B wrote']);
  });

  it('refuses a yielded value that is not a statement of the transaction', async (ctx) => {
    const reg = await sqlite!.open(ctx);
    await expect(
      reg.tx(function* () {
        yield Promise.resolve(1);
      }),
    ).rejects.toThrow(/must yield drizzle statements/);
  });
});
