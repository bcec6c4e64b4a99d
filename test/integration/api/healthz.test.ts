/**
 * `GET /healthz` reads the registry on both dialects (issue 15): 200 while a real read succeeds, 503 with the
 * JSON error body once the registry cannot be read (closed SQLite handle, ended PostgreSQL pool). And on
 * PostgreSQL, an unreachable server answers any route 503 `registry_unavailable` with Retry-After, counted.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry as PromRegistry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { createCloudApi } from '../../../cloud/api/app.js';
import type { RolloutsService, RoundsService } from '../../../cloud/api/types.js';
import { KeyStore } from '../../../cloud/keys/store.js';
import { openRegistry } from '../../../cloud/registry/open.js';
import { PgRegistry } from '../../../cloud/registry/pg.js';
import { registryDialects } from '../../helpers/dialects.js';
import { waitFor } from '../../helpers/net.js';
import { TOKEN } from '../../unit/cloud-api/helpers.js';

/** A TCP proxy to PostgreSQL that can cut the database off: existing connections dropped, new ones refused. */
async function cuttableProxy(target: URL): Promise<{ url: (u: string) => string; cut: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((inbound) => {
    const outbound = connect(Number(target.port || 5432), target.hostname);
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => s.destroy());
    }
    inbound.pipe(outbound).pipe(inbound);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    url: (u) => Object.assign(new URL(u), { hostname: '127.0.0.1', port: String(port) }).toString(),
    cut: async () => {
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

const dialects = registryDialects();

describe.each(dialects)('/healthz on $name', (d) => {
  let dir: string | undefined;
  afterEach(async () => {
    await d.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('answers 200 while the registry reads, 503 with a JSON body naming the problem when it cannot', async (ctx) => {
    const shared = await d.open(ctx);
    // A registry of the app's own on the same database, closed by this test (d.close closes only the shared ones).
    const reg = await openRegistry(shared.dialect === 'postgres' ? { url: shared.url } : { path: shared.sqlite.name });
    dir = mkdtempSync(join(tmpdir(), 'apprentice-healthz-'));
    const app = createCloudApi({
      registry: reg,
      keys: KeyStore.open({ dir: join(dir, 'keys') }),
      adminToken: TOKEN,
      broker: { publicUrl: 'mqtt://127.0.0.1:1883' },
      rounds: {} as RoundsService,
      rollouts: {} as RolloutsService,
      artifactsDir: dir,
      console: false,
    });
    const ok = await app.request('/healthz');
    expect(ok.status).toBe(200);
    expect(await ok.json()).toMatchObject({ status: 'ok', uptimeSeconds: expect.any(Number) });

    await reg.close();
    const down = await app.request('/healthz');
    expect(down.status).toBe(503);
    expect(await down.json()).toEqual({ error: { code: 'unavailable', message: 'registry unavailable' } });
    // The shared connection still reads: the 503 was this registry's, not the database's.
    expect(await shared.q.select().from(shared.t.meta)).toEqual(expect.any(Array));
  });

  it('PostgreSQL unreachable: any route answers 503 registry_unavailable with Retry-After, counted; /healthz 503', async (ctx) => {
    const shared = await d.open(ctx);
    if (shared.dialect !== 'postgres') return ctx.skip('PostgreSQL only: a SQLite registry has no server to lose (its busy lock is registry_busy, test/unit/cloud-api/errors.test.ts)');
    const proxy = await cuttableProxy(new URL(shared.url));
    const reg = await PgRegistry.open({ url: proxy.url(shared.url), poolSize: 2 });
    dir = mkdtempSync(join(tmpdir(), 'apprentice-healthz-'));
    const metrics = new PromRegistry();
    const app = createCloudApi({ registry: reg, keys: KeyStore.open({ dir: join(dir, 'keys') }), adminToken: TOKEN, broker: { publicUrl: 'mqtt://127.0.0.1:1883' }, rounds: {} as RoundsService, rollouts: {} as RolloutsService, artifactsDir: dir, console: false, uploads: { metrics } });
    const auth = { authorization: `Bearer ${TOKEN}` };
    try {
      expect((await app.request('/v1/devices', { headers: auth })).status).toBe(200);
      await proxy.cut();
      // The pool notices its connections were dropped (a query already on one fails without a SQLSTATE); from
      // then on every connection attempt is refused.
      await waitFor(() => reg.pool.totalCount === 0, 5_000, { intervalMs: 20, message: 'the pool dropped its connections' });
      const res = await app.request('/v1/devices', { headers: auth });
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('1');
      expect(await res.json()).toEqual({ error: { code: 'registry_unavailable', message: 'the registry database is not reachable right now; retry shortly' } });
      const refused = await metrics.getSingleMetric('apprentice_cloud_api_refused_total')!.get();
      expect(refused.values).toEqual([expect.objectContaining({ labels: { reason: 'registry_unavailable' }, value: 1 })]);
      expect((await app.request('/healthz')).status).toBe(503);
    } finally {
      await reg.close().catch(() => undefined);
    }
  });
});
