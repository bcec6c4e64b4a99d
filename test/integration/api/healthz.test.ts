/**
 * `GET /healthz` reads the registry on both dialects (issue 15): 200 while a real read succeeds, 503 with the
 * JSON error body once the registry cannot be read (closed SQLite handle, ended PostgreSQL pool).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createCloudApi } from '../../../cloud/api/app.js';
import type { RolloutsService, RoundsService } from '../../../cloud/api/types.js';
import { KeyStore } from '../../../cloud/keys/store.js';
import { openRegistry } from '../../../cloud/registry/open.js';
import { registryDialects } from '../../helpers/dialects.js';
import { TOKEN } from '../../unit/cloud-api/helpers.js';

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
});
