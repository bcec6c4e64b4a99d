import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadCloudConfig } from '../../../cloud/config/load.js';
import { openRegistry } from '../../../cloud/registry/open.js';
import { redactUrl } from '../../../cloud/registry/pg.js';
import { startCloud } from '../../../cloud/server.js';
import { silentLogger } from '../../../shared/log/index.js';
import { UsageError } from '../../../shared/cli/errors.js';

describe('opening the registry by URL (issue 15)', () => {
  it('names the unreachable URL with its password redacted', async () => {
    const err = await openRegistry({ url: 'postgres://app:s3cret-pw@127.0.0.1:1/apprentice' }).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/^registry: cannot connect to PostgreSQL at postgres:\/\/app:\*\*\*@127\.0\.0\.1:1\/apprentice: /);
    expect((err as Error).message).not.toContain('s3cret');
  });

  it('refuses a URL of another scheme; a path opens SQLite', async () => {
    await expect(openRegistry({ url: 'mysql://x@h/db' })).rejects.toThrow(/postgres:\/\/ or postgresql:\/\//);
    const reg = await openRegistry({ path: ':memory:' });
    expect(reg.dialect).toBe('sqlite');
    await reg.close();
    expect(redactUrl('postgresql://u@h/db')).toBe('postgresql://u@h/db');
  });

  it('config registry.url accepts postgres URLs, env APPRENTICE_REGISTRY_URL wins, anything else is a usage error', () => {
    expect(loadCloudConfig({ env: {} }).registry.url).toBeUndefined();
    const dir = mkdtempSync(join(tmpdir(), 'registry-url-'));
    const file = join(dir, 'cloud.json');
    writeFileSync(file, JSON.stringify({ registry: { url: 'postgresql://a@db1/x' } }));
    expect(loadCloudConfig({ file, env: {} }).registry.url).toBe('postgresql://a@db1/x');
    expect(loadCloudConfig({ file, env: { APPRENTICE_REGISTRY_URL: 'postgres://b:pw@db2:5432/y' } }).registry.url).toBe('postgres://b:pw@db2:5432/y');
    const bad = (() => {
      try {
        loadCloudConfig({ env: { APPRENTICE_REGISTRY_URL: 'sqlite:///tmp/x.db' } });
      } catch (e) {
        return e;
      }
    })();
    expect(bad).toBeInstanceOf(UsageError);
    expect((bad as Error).message).toContain('registry.url: expected a postgres:// or postgresql:// URL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('the cloud opens registry.url on PostgreSQL, never silently SQLite: an unreachable URL fails its start, redacted', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'registry-url-cloud-'));
    try {
      const cfg = loadCloudConfig({ env: { APPRENTICE_REGISTRY_URL: 'postgres://app:pw@127.0.0.1:1/apprentice', APPRENTICE_DATA_DIR: dataDir } });
      expect(cfg.dataDir).toBe(dataDir);
      const err = await startCloud(cfg, { log: silentLogger }).catch((e: Error) => e);
      expect(err).toBeInstanceOf(Error);
      expect((err as Error).message).toMatch(/^registry: cannot connect to PostgreSQL at postgres:\/\/app:\*\*\*@127\.0\.0\.1:1\/apprentice: /);
      expect(existsSync(join(dataDir, 'registry.db'))).toBe(false);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
