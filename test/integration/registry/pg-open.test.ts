import { afterEach, describe, expect, it } from 'vitest';
import type { PgRegistry } from '../../../cloud/registry/pg.js';
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
    expect(Number(rows[0]!.n)).toBe(1);
    await regs[1]!.q.insert(regs[1]!.t.meta).values({ key: 'k', value: 'v' });
    expect(await regs[2]!.q.select().from(regs[2]!.t.meta)).toEqual([{ key: 'k', value: 'v' }]);
  });
});
