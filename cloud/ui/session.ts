import { createHmac, randomBytes } from 'node:crypto';
import type { Context, MiddlewareHandler } from 'hono';
import { deleteCookie, getSignedCookie, setSignedCookie } from 'hono/cookie';
import { z } from 'zod';
import type { Logger } from '../../shared/log/index.js';
import { constantTimeEqual } from '../api/middleware.js';
import type { SessionStore } from './secret-store.js';

export const SESSION_COOKIE = 'apprentice_session';
export const CSRF_HEADER = 'x-csrf-token';
export const CSRF_FIELD = '_csrf';

/** Who is signed in: a random session id, the name the operator gave at login, and when it ends (ms). */
export const sessionSchema = z.strictObject({ sid: z.string().regex(/^[A-Za-z0-9_-]{16,64}$/), who: z.string().max(64), exp: z.number().int() });
export type Session = z.infer<typeof sessionSchema> & { csrf: string };
export type UiEnv = { Variables: { session: Session } };

export interface SessionOptions {
  store: SessionStore;
  ttlSeconds?: number;
  now?: () => number;
  log: Logger;
  /** Counts what the console refuses, by reason (no_session, bad_csrf, bad_token). */
  refused?: (reason: 'no_session' | 'bad_csrf' | 'bad_token') => void;
}

/**
 * The console's login: the admin token is exchanged once for a session cookie, HMAC-signed with a secret
 * kept in the registry (secret-store.ts), HttpOnly (no script reads it), SameSite=Strict (no other site's
 * page sends it), Secure when served over TLS, with an expiry inside the signed value (a replayed old
 * cookie is refused even if the browser kept it). The CSRF token is HMAC(secret, "csrf:" + sid): bound to
 * the session, never stored, checked on every state-changing request in addition to SameSite.
 */
export function sessions({ store, ttlSeconds = 8 * 3600, now = Date.now, log, refused = () => {} }: SessionOptions) {
  const csrfOf = (secret: string, sid: string): string => createHmac('sha256', secret).update(`csrf:${sid}`).digest('base64url');

  async function read(c: Context): Promise<Session | undefined> {
    const secret = await store.secret();
    const raw = await getSignedCookie(c, secret, SESSION_COOKIE);
    if (!raw) return undefined;
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8'));
    } catch {
      return undefined;
    }
    const s = sessionSchema.safeParse(parsed);
    if (!s.success || s.data.exp <= now() || (await store.isRevoked(s.data.sid))) return undefined;
    return { ...s.data, csrf: csrfOf(secret, s.data.sid) };
  }

  return {
    read,
    /** Checks the admin token; on success sets the cookie and returns the session. */
    async login(c: Context, token: string, expected: string, who: string): Promise<Session | undefined> {
      if (!constantTimeEqual(token, expected)) {
        refused('bad_token');
        log.warn({ ip: c.req.header('x-forwarded-for') ?? null }, 'ui/login refused: wrong admin token');
        return undefined;
      }
      const secret = await store.secret();
      const s = { sid: randomBytes(18).toString('base64url'), who: who.trim().slice(0, 64) || 'admin', exp: now() + ttlSeconds * 1000 };
      const secure = new URL(c.req.url).protocol === 'https:';
      await setSignedCookie(c, SESSION_COOKIE, Buffer.from(JSON.stringify(s)).toString('base64url'), secret, { path: '/ui', httpOnly: true, sameSite: 'Strict', secure, maxAge: ttlSeconds });
      log.info({ sid: s.sid, who: s.who }, 'ui/login');
      return { ...s, csrf: csrfOf(secret, s.sid) };
    },
    async logout(c: Context, s: Session): Promise<void> {
      await store.revoke(s.sid, s.exp);
      deleteCookie(c, SESSION_COOKIE, { path: '/ui' });
      log.info({ sid: s.sid, who: s.who }, 'ui/logout');
    },
    /**
     * Every route behind it needs a session: pages redirect to the login form, htmx/SSE/asset requests get
     * a 401. Every other method than GET/HEAD also needs the CSRF token (header or form field): 403.
     */
    guard(): MiddlewareHandler<UiEnv> {
      return async function uiSession(c, next) {
        const s = await read(c);
        if (!s) {
          refused('no_session');
          const wantsPage = c.req.method === 'GET' && !c.req.header('hx-request') && (c.req.header('accept') ?? '').includes('text/html');
          if (wantsPage) return c.redirect(`/ui/login?next=${encodeURIComponent(new URL(c.req.url).pathname + new URL(c.req.url).search)}`, 303);
          return c.json({ error: { code: 'unauthorized', message: 'no console session: log in at /ui/login' } }, 401);
        }
        if (c.req.method !== 'GET' && c.req.method !== 'HEAD') {
          let given = c.req.header(CSRF_HEADER);
          if (given === undefined && (c.req.header('content-type') ?? '').startsWith('application/x-www-form-urlencoded')) {
            const form = await c.req.parseBody();
            given = typeof form[CSRF_FIELD] === 'string' ? form[CSRF_FIELD] : undefined;
          }
          if (given === undefined || !constantTimeEqual(given, s.csrf)) {
            refused('bad_csrf');
            log.warn({ sid: s.sid, path: c.req.path }, 'ui/csrf refused');
            return c.json({ error: { code: 'csrf', message: given === undefined ? 'missing CSRF token' : 'invalid CSRF token' } }, 403);
          }
        }
        c.set('session', s);
        return next();
      };
    },
  };
}
export type Sessions = ReturnType<typeof sessions>;
