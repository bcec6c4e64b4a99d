import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { ApiClient, ApiError, resolveAdminToken } from '../../../shared/cli/api-client.js';
import { UsageError } from '../../../shared/cli/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'apprentice-api-client-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('resolveAdminToken', () => {
  const file = join(dir, 'admin-token');
  writeFileSync(file, '  token-from-file-0123456789\n');

  it('takes --token, then --token-file, then $APPRENTICE_ADMIN_TOKEN, then $APPRENTICE_ADMIN_TOKEN_FILE', () => {
    expect(resolveAdminToken({ token: 'flag', tokenFile: file }, { APPRENTICE_ADMIN_TOKEN: 'env' })).toBe('flag');
    expect(resolveAdminToken({ tokenFile: file }, { APPRENTICE_ADMIN_TOKEN: 'env' })).toBe('token-from-file-0123456789');
    expect(resolveAdminToken({}, { APPRENTICE_ADMIN_TOKEN: 'env', APPRENTICE_ADMIN_TOKEN_FILE: file })).toBe('env');
    expect(resolveAdminToken({}, { APPRENTICE_ADMIN_TOKEN_FILE: file })).toBe('token-from-file-0123456789');
  });

  it('refuses a missing token, an unreadable file and an empty file with a usage error naming the source', () => {
    expect(() => resolveAdminToken({}, {})).toThrow(/--token is required/);
    expect(() => resolveAdminToken({ tokenFile: join(dir, 'nope') }, {})).toThrow(/--token-file: cannot read .*nope \(ENOENT\)/);
    expect(() => resolveAdminToken({}, { APPRENTICE_ADMIN_TOKEN_FILE: join(dir, 'nope') })).toThrow(/\$APPRENTICE_ADMIN_TOKEN_FILE: cannot read/);
    const empty = join(dir, 'empty');
    writeFileSync(empty, '\n');
    expect(() => resolveAdminToken({ tokenFile: empty }, {})).toThrow(UsageError);
    expect(() => resolveAdminToken({ tokenFile: empty }, {})).toThrow(/token file is empty/);
  });
});

describe('ApiClient', () => {
  it('sends the bearer token, the query and a JSON body, and validates the answer', async () => {
    const fetchImpl = vi.fn().mockResolvedValue(Response.json({ id: 'r1' }));
    const api = new ApiClient({ cloud: 'http://cloud.test/base', token: 'tok', fetchImpl });
    const out = await api.request('POST', 'v1/rollouts', { json: { a: 1 }, query: { wait: 1, skip: undefined }, schema: z.object({ id: z.string() }) });
    expect(out).toEqual({ id: 'r1' });
    const [url, init] = fetchImpl.mock.calls[0]! as [URL, RequestInit & { headers: Record<string, string> }];
    expect(url.href).toBe('http://cloud.test/base/v1/rollouts?wait=1');
    expect(init.headers.authorization).toBe('Bearer tok');
    expect(init.headers['content-type']).toBe('application/json');
    expect(init.body).toBe('{"a":1}');
  });

  it('turns an API error body, a non-JSON error and a schema mismatch into one-line ApiErrors', async () => {
    const refused = new ApiClient({ cloud: 'http://x', token: 't', fetchImpl: vi.fn().mockResolvedValue(Response.json({ error: { code: 'rollout_conflict', message: 'busy', field: 'model' } }, { status: 409 })) });
    const err = (await refused.request('GET', 'v1/x').catch((e: unknown) => e)) as ApiError;
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 409, code: 'rollout_conflict', message: 'HTTP 409 from http://x/v1/x: rollout_conflict: busy (field model)' });
    const proxy = new ApiClient({ cloud: 'http://x', token: 't', fetchImpl: vi.fn().mockResolvedValue(new Response('<html>\n bad gateway</html>', { status: 502 })) });
    await expect(proxy.request('GET', 'v1/x')).rejects.toThrow('HTTP 502 from http://x/v1/x: <html> bad gateway</html>');
    const odd = new ApiClient({ cloud: 'http://x', token: 't', fetchImpl: vi.fn().mockResolvedValue(Response.json({ id: 3 })) });
    await expect(odd.request('GET', 'v1/x', { schema: z.object({ id: z.string() }) })).rejects.toThrow(/unexpected response from http:\/\/x\/v1\/x: id: /);
  });

  it('refuses a base URL that is not http(s)', () => {
    expect(() => new ApiClient({ cloud: 'not a url', token: 't' })).toThrow(/--cloud: not a URL/);
    expect(() => new ApiClient({ cloud: 'ftp://x', token: 't' })).toThrow(/expected an http\(s\) URL/);
  });
});
