import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { provisionCommand, brokerAuthCommand } from '../../../cloud/provision/cli.js';
import { provisionDevice } from '../../../cloud/provision/client.js';
import { ApiError } from '../../../shared/cli/api-client.js';
import { runProgram } from '../../../shared/cli/run.js';
import { harness, TOKEN, type Harness } from '../cloud-api/helpers.js';

describe('provisionDevice (in-process against the real app)', () => {
  let h: Harness;
  const fetchImpl = ((input: string | URL | Request, init?: RequestInit) => h.app.request(String(input), init)) as typeof fetch;
  beforeAll(() => {
    h = harness();
  });
  afterAll(() => h.close());

  it('returns the validated bundle', async () => {
    const b = await provisionDevice({ cloud: 'http://cloud.test', token: TOKEN, deviceId: 'pi-1', groups: ['a'], fetchImpl });
    expect(b).toMatchObject({ version: 1, deviceId: 'pi-1', mqtt: { username: 'pi-1' } });
  });

  it.each([
    [{ token: 'wrong-token', deviceId: 'pi-2' }, /^HTTP 401 from http:\/\/cloud\.test\/v1\/devices: unauthorized: invalid token$/],
    [{ token: TOKEN, deviceId: 'pi-1' }, /^HTTP 409 .*device_exists: device pi-1 already exists \(field id\)$/],
  ])('turns HTTP errors into one-line ApiErrors', async (over, message) => {
    const err = await provisionDevice({ cloud: 'http://cloud.test/', fetchImpl, ...over }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as Error).message).toMatch(message);
  });

  it('reports unreachable clouds, bad URLs and responses that are not a bundle', async () => {
    const refused = Object.assign(new TypeError('fetch failed'), { cause: { code: 'ECONNREFUSED' } });
    await expect(provisionDevice({ cloud: 'http://127.0.0.1:9', token: TOKEN, deviceId: 'x', fetchImpl: vi.fn().mockRejectedValue(refused) })).rejects.toThrow(/cannot reach http:\/\/127\.0\.0\.1:9: ECONNREFUSED/);
    await expect(provisionDevice({ cloud: 'not a url', token: TOKEN, deviceId: 'x' })).rejects.toThrow(/--cloud: not a URL/);
    await expect(provisionDevice({ cloud: 'ftp://x', token: TOKEN, deviceId: 'x' })).rejects.toThrow(/expected an http\(s\) URL/);
    const html = vi.fn().mockResolvedValue(new Response('<html>proxy</html>', { status: 200 }));
    await expect(provisionDevice({ cloud: 'http://x', token: TOKEN, deviceId: 'x', fetchImpl: html })).rejects.toThrow(/unexpected response .*not JSON/);
    const bad = vi.fn().mockResolvedValue(Response.json({ version: 1, deviceId: 'x' }));
    await expect(provisionDevice({ cloud: 'http://x', token: TOKEN, deviceId: 'x', fetchImpl: bad })).rejects.toThrow(/mqtt: required|mqtt: Invalid input/);
  });
});

describe('provision / broker-auth argument checks (exit 2 before any request)', () => {
  let h: Harness;
  let stderr: string;
  beforeAll(() => {
    h = harness();
  });
  afterAll(() => h.close());

  async function run(...argv: string[]): Promise<number> {
    stderr = '';
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => ((stderr += String(chunk)), true));
    try {
      const program = new Command('apprentice').addCommand(provisionCommand()).addCommand(brokerAuthCommand());
      return await runProgram(program, ['node', 'apprentice', ...argv]);
    } finally {
      spy.mockRestore();
    }
  }

  it('refuses a bad device id, an existing --out, a missing token and a missing --out directory', async () => {
    const out = join(h.dir, 'edge.json');
    writeFileSync(out, '{}');
    expect(await run('provision', '--cloud', 'http://127.0.0.1:9', '--token', TOKEN, '--device', 'bad/id', '--out', join(h.dir, 'a.json'))).toBe(2);
    expect(stderr).toMatch(/--device: invalid device id/);
    expect(await run('provision', '--cloud', 'http://127.0.0.1:9', '--token', TOKEN, '--device', 'pi', '--out', out)).toBe(2);
    expect(stderr).toMatch(/exists \(pass --force/);
    expect(await run('provision', '--cloud', 'http://127.0.0.1:9', '--token', TOKEN, '--device', 'pi', '--out', join(h.dir, 'no', 'dir', 'e.json'))).toBe(2);
    expect(stderr).toMatch(/does not exist/);
    vi.stubEnv('APPRENTICE_ADMIN_TOKEN', '');
    expect(await run('provision', '--cloud', 'http://127.0.0.1:9', '--device', 'pi', '--out', join(h.dir, 'b.json'))).toBe(2);
    vi.unstubAllEnvs();
    expect(stderr).toMatch(/--token is required/);
  });

  it('broker-auth needs exactly one of --data-dir and --db', async () => {
    expect(await run('broker-auth', '--out-dir', h.dir)).toBe(2);
    expect(await run('broker-auth', '--data-dir', h.dir, '--db', 'x', '--out-dir', h.dir)).toBe(2);
    expect(stderr).toMatch(/exactly one of --data-dir, --db or --registry-url/);
    expect(existsSync(join(h.dir, 'passwd'))).toBe(false);
  });
});
