import { Hono } from 'hono';
import { z } from 'zod';
import { readPublishedKeySet } from '../../keys/keyset-file.js';
import type { UiContext } from '../context.js';
import { Page, fmtTime } from '../layout.js';
import type { UiEnv } from '../session.js';

interface KeyInfo {
  keyId: string;
  status: 'active' | 'trusted' | 'retired';
  source: string;
  createdAt: string;
  retiredAt?: string;
}

/** The keys page (which key signs, the trusted and retired ones, the published key set) and the audit log. */
export function adminRoutes(ctx: UiContext): Hono<UiEnv> {
  return new Hono<UiEnv>()
    .get('/keys', async (c) => {
      const { keys } = await ctx.api<{ keys: KeyInfo[] }>('/v1/keys');
      let keyset: { version: number; keys: number } | undefined;
      let keysetError: string | undefined;
      try {
        const ks = readPublishedKeySet(ctx.dataDir);
        if (ks) keyset = { version: ks.keyset.version, keys: ks.keyset.keys.length };
      } catch (err) {
        keysetError = (err as Error).message;
      }
      const active = keys.find((k) => k.status === 'active');
      return c.html(
        <Page title="Signing keys" path="/ui/keys" session={c.get('session')}>
          <dl class="kv">
            <dt>Signing key</dt>
            <dd class="id" id="signing-key">{active?.keyId ?? 'none'}</dd>
            <dt>Key set version</dt>
            <dd id="keyset-version">{keyset ? `${keyset.version} (${keyset.keys} keys)` : keysetError ? <span class="error">{keysetError}</span> : 'none published (apprentice keys publish-keyset)'}</dd>
          </dl>
          <h2>Keys</h2>
          <table>
            <thead>
              <tr><th>Key id</th><th>Status</th><th>Source</th><th class="hide-sm">Created</th></tr>
            </thead>
            <tbody>
              {keys.map((k) => (
                <tr>
                  <td class="id">{k.keyId}</td>
                  <td>{k.status}{k.retiredAt ? ` ${fmtTime(k.retiredAt)}` : ''}</td>
                  <td>{k.source}</td>
                  <td class="hide-sm">{fmtTime(k.createdAt)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </Page>,
      );
    })
    .get('/audit', async (c) => {
      const q = z.object({ before: z.coerce.number().int().min(1).optional() }).safeParse(c.req.query());
      if (!q.success) return c.json({ error: { code: 'invalid_query', message: 'before: expected a positive integer' } }, 400);
      const limit = 100;
      const entries = await ctx.data.listAudit({ limit, before: q.data.before });
      return c.html(
        <Page title="Audit log" path="/ui/audit" session={c.get('session')}>
          {entries.length === 0 ? <p class="muted">No operator actions recorded.</p> : null}
          <table id="audit">
            <thead>
              <tr><th>When</th><th>Who</th><th>Action</th><th>On</th></tr>
            </thead>
            <tbody>
              {entries.map((e) => (
                <tr>
                  <td>{fmtTime(e.at)}</td>
                  <td class="id">{e.actor}{typeof e.detail?.who === 'string' ? <div class="muted">{e.detail.who}</div> : null}</td>
                  <td>{e.action}</td>
                  <td class="id">{e.target ?? ''}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {entries.length === limit ? <nav class="pager" aria-label="Pages"><a href={`/ui/audit?before=${entries.at(-1)!.id}`} rel="next">Older</a></nav> : null}
        </Page>,
      );
    });
}
