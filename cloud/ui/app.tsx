import { Hono, type Context } from 'hono';
import type { Logger } from '../../shared/log/index.js';
import type { StoreRegistry } from '../registry/open.js';
import { assetRoutes } from './assets.js';
import { ApiCallError, actorOf, type ApiCall, type UiContext } from './context.js';
import type { ConsoleData } from './data.js';
import { LoginPage } from './layout.js';
import { LiveHub } from './live.js';
import { loginLimiter } from './login-limit.js';
import { adminRoutes } from './pages/admin.js';
import { deviceRoutes } from './pages/devices.js';
import { exampleRoutes } from './pages/examples.js';
import { overviewRoutes } from './pages/overview.js';
import { releaseRoutes } from './pages/releases.js';
import { rolloutRoutes } from './pages/rollouts.js';
import { roundRoutes } from './pages/rounds.js';
import { registrySessionStore } from './secret-store.js';
import { sessions, type UiEnv } from './session.js';

export interface ConsoleDeps {
  /** The JSON API app (cloud/api): every read and action of the console goes through it, in process. */
  api: { request: (path: string, init: RequestInit, env: { consoleActor?: string }) => Response | Promise<Response> };
  adminToken: string;
  registry: StoreRegistry;
  data: ConsoleData;
  dataDir: string;
  log: Logger;
  /** Session lifetime; default 8 h. */
  sessionTtlSeconds?: number;
  /** SSE tick; default 1 s. */
  liveIntervalMs?: number;
  /** Counts refusals (no session, bad CSRF, wrong token at login, too many failed logins). */
  onRefused?: (reason: RefusalReason) => void;
  /** Counts an audit entry the console could not write (login, logout); the action itself went ahead. */
  onAuditFailed?: () => void;
  /** The client's address for the login rate limit; default: one shared bucket ('unknown'). */
  clientAddress?: (c: Context) => string | undefined;
  /** Failed logins per address per minute before 429; default 5. */
  loginFailuresPerMinute?: number;
}

/** `login_table_full`: the login limit forgot its stalest address to stay bounded (not a refused request). */
export type RefusalReason = 'no_session' | 'bad_csrf' | 'bad_token' | 'rate_limited' | 'login_table_full';

/**
 * The fleet console at /ui/. Why this stack: pages are rendered on the server with Hono's JSX (the same
 * server and types as the API, no bundler, no client framework), htmx swaps fragments for the actions
 * and its SSE extension applies live rollout progress from `streamSSE`, and uPlot (~50 kB) draws the
 * time series. All three ship in the npm package and are served from /ui/assets/: no CDN, so it works
 * air-gapped. Reads and actions go through the JSON API in process, so the console shows exactly what
 * the API says and enforces the same validation; the fleet views and the audit log come from `data`.
 */
export function createConsole(deps: ConsoleDeps): { app: Hono; live: LiveHub } {
  const log = deps.log;
  const live = new LiveHub({ intervalMs: deps.liveIntervalMs, log });
  const api: ApiCall = async <T,>(path: string, init: { method?: 'GET' | 'POST'; body?: unknown; actor?: string } = {}): Promise<T> => {
    const headers: Record<string, string> = { authorization: `Bearer ${deps.adminToken}` };
    if (init.body !== undefined) headers['content-type'] = 'application/json';
    const res = await deps.api.request(path, { method: init.method ?? 'GET', headers, body: init.body === undefined ? undefined : JSON.stringify(init.body) }, { consoleActor: init.actor });
    const body = (await res.json().catch(() => ({}))) as { error?: { code: string; message: string } };
    if (!res.ok) throw new ApiCallError(res.status, body.error?.code ?? 'error', body.error?.message ?? `HTTP ${res.status}`);
    return body as T;
  };
  const apiRaw = async (path: string, headers: Record<string, string> = {}): Promise<Response> => deps.api.request(path, { method: 'GET', headers: { ...headers, authorization: `Bearer ${deps.adminToken}` } }, {});
  const store = registrySessionStore(deps.registry);
  const refused = deps.onRefused ?? (() => {});
  const auth = sessions({ store, ttlSeconds: deps.sessionTtlSeconds, log, refused });
  const limiter = loginLimiter({ maxFailures: deps.loginFailuresPerMinute, log, evicted: () => refused('login_table_full') });
  /** Login and logout are recorded; a failed write is logged and counted, and does not undo the action. */
  const recordAudit = async (e: Parameters<ConsoleData['recordAudit']>[0]): Promise<void> => {
    try {
      await deps.data.recordAudit(e);
    } catch (err) {
      deps.onAuditFailed?.();
      log.error({ err, action: e.action }, 'ui/audit-failed');
    }
  };
  const sessionLive = async (s: { sid: string; exp: number }): Promise<boolean> => s.exp > Date.now() && !(await store.isRevoked(s.sid));
  const ctx: UiContext = { api, apiRaw, data: deps.data, registry: deps.registry, dataDir: deps.dataDir, live, log, sessionLive };
  const safeNext = (n: unknown): string => (typeof n === 'string' && /^\/ui(\/[\w\-./%?=&]*)?$/.test(n) && !n.includes('//') ? n : '/ui/');

  // Not strict: /ui and /ui/ are both the overview.
  const app = new Hono<UiEnv>({ strict: false }).basePath('/ui');
  app.route('/assets', assetRoutes());
  app.get('/login', (c) => c.html(<LoginPage next={safeNext(c.req.query('next'))} />));
  app.post('/login', async (c) => {
    const addr = deps.clientAddress?.(c) ?? 'unknown';
    const form = await c.req.parseBody();
    const next = safeNext(form.next);
    const wait = limiter.blocked(addr);
    if (wait > 0) {
      // Refused before the token is even compared: a guesser learns nothing until the window passes.
      refused('rate_limited');
      log.warn({ addr, retryAfterSeconds: wait }, 'ui/login refused: too many failed logins');
      c.header('Retry-After', String(wait));
      const message = `Too many failed logins from this address: try again in ${wait} s.`;
      if ((c.req.header('accept') ?? '').includes('text/html')) return c.html(<LoginPage error={message} next={next} />, 429);
      return c.json({ error: { code: 'rate_limited', message } }, 429);
    }
    const token = typeof form.token === 'string' ? form.token : '';
    const who = typeof form.who === 'string' ? form.who : '';
    const s = await auth.login(c, token, deps.adminToken, who);
    if (!s) {
      limiter.fail(addr);
      return c.html(<LoginPage error="Wrong admin token." next={next} />, 401);
    }
    limiter.succeed(addr);
    await recordAudit({ actor: actorOf(s), action: 'session.login', detail: { who: s.who } });
    return c.redirect(next, 303);
  });
  app.use('*', auth.guard());
  app.post('/logout', async (c) => {
    const s = c.get('session');
    await auth.logout(c, s);
    await recordAudit({ actor: actorOf(s), action: 'session.logout', detail: { who: s.who } });
    return c.redirect('/ui/login', 303);
  });
  app.route('/', overviewRoutes(ctx));
  app.route('/devices', deviceRoutes(ctx));
  app.route('/rollouts', rolloutRoutes(ctx));
  app.route('/rounds', roundRoutes(ctx));
  app.route('/releases', releaseRoutes(ctx));
  app.route('/examples', exampleRoutes(ctx));
  app.route('/', adminRoutes(ctx));
  app.notFound((c) => c.json({ error: { code: 'not_found', message: `no console page ${c.req.path}` } }, 404));
  app.onError((err, c) => {
    if (err instanceof ApiCallError) {
      const status = err.status >= 400 && err.status < 500 ? err.status : 502;
      return c.json({ error: { code: err.code, message: err.message } }, status as 400);
    }
    log.error({ err, path: c.req.path }, 'ui/error');
    return c.json({ error: { code: 'internal', message: 'console error (logged)' } }, 500);
  });
  return { app: app as unknown as Hono, live };
}
