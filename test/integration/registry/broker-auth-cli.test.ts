/**
 * `apprentice broker-auth` on either registry (issue 15): the Mosquitto password file lists the provisioned,
 * non-revoked devices read from SQLite (--db) or PostgreSQL (--registry-url); a bad URL is a usage error (exit 2).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { brokerAuthCommand } from '../../../cloud/provision/cli.js';
import { hashPassword } from '../../../cloud/provision/passwd.js';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { runProgram } from '../../../shared/cli/run.js';
import { registryDialects } from '../../helpers/dialects.js';

const dialects = registryDialects();

async function run(...argv: string[]): Promise<{ code: number; stderr: string }> {
  let stderr = '';
  const err = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => ((stderr += String(chunk)), true));
  const out = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
  try {
    const code = await runProgram(new Command('apprentice').addCommand(brokerAuthCommand()), ['node', 'apprentice', ...argv]);
    return { code, stderr };
  } finally {
    err.mockRestore();
    out.mockRestore();
  }
}

describe.each(dialects)('apprentice broker-auth on $name', (d) => {
  let reg: StoreRegistry;
  let dir: string;
  beforeEach(async (ctx) => {
    reg = await d.open(ctx);
    dir = mkdtempSync(join(tmpdir(), 'broker-auth-cli-'));
    await reg.q.insert(reg.t.devices).values([
      { id: 'pi-a', groups: [], credentialHash: hashPassword('a') },
      { id: 'pi-b', groups: [], credentialHash: hashPassword('b') },
      { id: 'pi-gone', groups: [], credentialHash: hashPassword('c'), revoked: true },
    ]);
  });
  afterEach(async () => {
    await d.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('writes passwd with the non-revoked devices and the cloud user', async () => {
    const where = reg.dialect === 'postgres' ? ['--registry-url', reg.url] : ['--db', reg.sqlite.name];
    const r = await run('broker-auth', ...where, '--out-dir', join(dir, 'auth'), '--cloud-password-file', join(dir, 'pw'));
    expect(r).toEqual({ code: 0, stderr: '' });
    const users = readFileSync(join(dir, 'auth', 'passwd'), 'utf8').trim().split('\n').map((l) => l.split(':')[0]).sort();
    expect(users).toEqual(['apprentice-cloud', 'pi-a', 'pi-b']);
  });

  it('refuses a registry URL that is not postgres:// and two sources at once (exit 2)', async () => {
    expect(await run('broker-auth', '--registry-url', 'mysql://x', '--out-dir', dir)).toMatchObject({ code: 2, stderr: expect.stringMatching(/--registry-url: must start with postgres:\/\//) });
    expect(await run('broker-auth', '--registry-url', 'postgres://x', '--db', 'y', '--out-dir', dir)).toMatchObject({ code: 2, stderr: expect.stringMatching(/exactly one of --data-dir, --db or --registry-url/) });
  });
});
