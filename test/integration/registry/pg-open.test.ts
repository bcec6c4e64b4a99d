import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import type { PgRegistry } from '../../../cloud/registry/pg.js';
import { captureLogger } from '../../helpers/log.js';
import { openRegistry } from '../../../cloud/registry/open.js';
import { registryDialects } from '../../helpers/dialects.js';

const [, postgres] = registryDialects();

describe('opening the PostgreSQL registry', () => {
  const opened: PgRegistry[] = [];
  afterEach(async () => {
    for (const r of opened.splice(0)) await r.close();
  });

  it('replicas starting together migrate a fresh database once (advisory lock), then all serve', async (ctx) => {
    const url = await postgres!.url!(ctx);
    const regs = (await Promise.all([1, 2, 3].map(() => openRegistry({ url, poolSize: 2 })))) as PgRegistry[];
    opened.push(...regs);
    expect(regs.map((r) => r.dialect)).toEqual(['postgres', 'postgres', 'postgres']);
    const { rows } = await regs[0]!.pool.query<{ n: string }>('select count(*) as n from drizzle.__drizzle_migrations');
    // Each committed migration applied exactly once, however many replicas raced.
    const journal = JSON.parse(readFileSync(new URL('../../../cloud/registry/migrations-pg/meta/_journal.json', import.meta.url), 'utf8')) as { entries: unknown[] };
    expect(Number(rows[0]!.n)).toBe(journal.entries.length);
    await regs[1]!.q.insert(regs[1]!.t.meta).values({ key: 'k', value: 'v' });
    expect(await regs[2]!.q.select().from(regs[2]!.t.meta)).toEqual([{ key: 'k', value: 'v' }]);
  });

  it('survives the server ending the session of a checked-out, idle client: logged, and the next statement reconnects', async (ctx) => {
    const url = await postgres!.url!(ctx);
    const cap = captureLogger();
    const reg = (await openRegistry({ url, poolSize: 2, log: cap.log })) as PgRegistry;
    opened.push(reg);
    const held = await reg.pool.connect();
    const { rows } = await held.query<{ pid: number }>('select pg_backend_pid() as pid');
    // From another connection, as an administrator or a database failover would.
    await reg.pool.query('select pg_terminate_backend($1)', [rows[0]!.pid]);
    await expect.poll(() => cap.lines().some((l) => l.msg === 'registry/pg connection error on a checked-out client'), { timeout: 5000 }).toBe(true);
    await expect(held.query('select 1')).rejects.toThrow();
    held.release(true);
    await reg.q.insert(reg.t.meta).values({ key: 'after', value: 'ok' });
    expect(await reg.q.select().from(reg.t.meta)).toContainEqual({ key: 'after', value: 'ok' });
  });
});
