import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../../shared/log/index.js';
import { loginLimiter } from '../../../cloud/ui/login-limit.js';
import { harness, TOKEN, type Harness } from '../cloud-api/helpers.js';

const form = (fields: Record<string, string>, headers: Record<string, string> = {}) => ({ method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: new URLSearchParams(fields).toString() });

describe('login rate limit (per client address)', () => {
  it('refuses the 6th attempt within a minute with the seconds to wait, then lets the address try again', () => {
    let t = 1_000_000;
    const l = loginLimiter({ log: silentLogger, now: () => t });
    for (let i = 0; i < 5; i++) {
      expect(l.blocked('10.0.0.1')).toBe(0);
      l.fail('10.0.0.1');
      t += 1000;
    }
    // First failure at t0; five of them: blocked until t0 + 60 s (55 s from now).
    expect(l.blocked('10.0.0.1')).toBe(55);
    expect(l.blocked('10.0.0.2')).toBe(0); // another address is not affected
    t += 55_000;
    expect(l.blocked('10.0.0.1')).toBe(0);
    l.fail('10.0.0.1');
    expect(l.blocked('10.0.0.1')).toBeGreaterThan(0); // four earlier failures still in the window + this one
    l.succeed('10.0.0.1');
    expect(l.blocked('10.0.0.1')).toBe(0);
  });

  it('keeps its table bounded: the stalest address is forgotten and counted', () => {
    let evicted = 0;
    const l = loginLimiter({ log: silentLogger, maxClients: 3, evicted: () => evicted++ });
    for (const a of ['a', 'b', 'c', 'd', 'e']) l.fail(a);
    expect(l.size).toBe(3);
    expect(evicted).toBe(2);
  });
});

describe('console login over HTTP, rate limited and counted', () => {
  let h: Harness;
  let metrics: import('prom-client').Registry;
  beforeAll(async () => {
    const { Registry } = await import('prom-client');
    metrics = new Registry();
    h = harness({ uploads: { metrics }, artifacts: { clientAddress: (c) => c.req.header('x-test-peer') } });
  });
  afterAll(() => h.close());

  const login = (token: string, peer: string, accept = 'text/html') => h.app.request('/ui/login', form({ token, who: 'eve' }, { 'x-test-peer': peer, accept }));

  it('5 wrong tokens from one address → 429 with Retry-After (HTML and JSON), even with the right token; other addresses log in', async () => {
    for (let i = 0; i < 5; i++) expect((await login('wrong-token-wrong-token', '192.0.2.7')).status).toBe(401);
    const page = await login(TOKEN, '192.0.2.7');
    expect(page.status).toBe(429);
    expect(Number(page.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(page.headers.get('set-cookie')).toBeNull();
    expect(await page.text()).toContain('Too many failed logins');
    const json = await login(TOKEN, '192.0.2.7', 'application/json');
    expect(json.status).toBe(429);
    expect(((await json.json()) as { error: { code: string } }).error.code).toBe('rate_limited');
    expect((await login(TOKEN, '192.0.2.8')).status).toBe(303);
    const text = await metrics.metrics();
    expect(text).toMatch(/apprentice_console_refused_total\{reason="bad_token"\} 5/);
    expect(text).toMatch(/apprentice_console_refused_total\{reason="rate_limited"\} 2/);
  });

  it('counts a failed audit write and still lets the action through', async () => {
    h.registry.sqlite.exec('drop table audit_log');
    const ok = await login(TOKEN, '192.0.2.9');
    expect(ok.status).toBe(303);
    expect(await metrics.metrics()).toMatch(/apprentice_audit_write_failed_total\{source="console"\} 1/);
  });
});
