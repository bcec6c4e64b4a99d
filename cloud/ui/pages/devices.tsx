import { Hono } from 'hono';
import { z } from 'zod';
import type { UiContext } from '../context.js';
import type { TelemetryPoint } from '../data.js';
import { Page, fmtTime } from '../layout.js';
import type { UiEnv } from '../session.js';

export const PAGE_SIZE = 50;

const listQuery = z.object({
  q: z.string().max(128).optional(),
  group: z.string().max(64).optional(),
  state: z.enum(['online', 'offline', 'never_seen', 'revoked', 'attention']).optional(),
  release: z.coerce.number().int().min(0).optional(),
  cursor: z.string().max(128).optional(),
});

/** Drops empty form fields ("state=" from a blank select) before validation. */
function present(q: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(q).filter(([, v]) => v !== ''));
}

function bad(message: string) {
  return { error: { code: 'invalid_query', message } };
}

/** One chart's data for console.js: x in epoch seconds, one series per metric. */
function series(points: TelemetryPoint[], pick: [string, (p: TelemetryPoint) => number | null][]): string {
  return JSON.stringify({ x: points.map((p) => Date.parse(p.at) / 1000), series: pick.map(([label, f]) => ({ label, values: points.map(f) })) });
}

/** The device list (filtered and paginated on the server, keyset by id) and one device's page. */
export function deviceRoutes(ctx: UiContext): Hono<UiEnv> {
  return new Hono<UiEnv>()
    .get('/', async (c) => {
      const parsed = listQuery.safeParse(present(c.req.query()));
      if (!parsed.success) return c.json(bad(parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')), 400);
      const f = parsed.data;
      const page = await ctx.data.queryDevices({ ...f, limit: PAGE_SIZE });
      const keep = new URLSearchParams(Object.entries({ q: f.q, group: f.group, state: f.state, release: f.release?.toString() }).filter((e): e is [string, string] => e[1] !== undefined));
      return c.html(
        <Page title="Devices" path="/ui/devices" session={c.get('session')}>
          <form class="filters" method="get" action="/ui/devices" role="search">
            <label>
              Search id or group
              <input type="search" name="q" value={f.q ?? ''} />
            </label>
            <label>
              Group
              <input type="text" name="group" value={f.group ?? ''} />
            </label>
            <label>
              State
              <select name="state">
                <option value="">any</option>
                {['online', 'offline', 'never_seen', 'revoked', 'attention'].map((s) => (
                  <option value={s} selected={f.state === s}>{s.replace('_', ' ')}</option>
                ))}
              </select>
            </label>
            <label>
              Running release
              <input type="number" name="release" min={0} value={f.release?.toString() ?? ''} />
            </label>
            <button type="submit">Filter</button>
          </form>
          <p id="device-total" data-total={page.total}>
            {page.total} device{page.total === 1 ? '' : 's'}
          </p>
          <table>
            <thead>
              <tr><th style="width:40%">Device</th><th>State</th><th>Release</th><th class="hide-sm">Last seen</th></tr>
            </thead>
            <tbody>
              {page.devices.map((d) => (
                <tr>
                  <td class="id"><a href={`/ui/devices/${encodeURIComponent(d.id)}`}>{d.id}</a>{d.groups.length ? <div class="muted">{d.groups.join(', ')}</div> : null}</td>
                  <td>{d.status.replace('_', ' ')}{d.attention.length ? <div class="error">{d.attention.join(', ').replaceAll('_', ' ')}</div> : null}</td>
                  <td>{d.running ? `${d.running.release}` : '—'}{d.desiredRelease !== null && d.desiredRelease !== d.running?.release ? ` → ${d.desiredRelease}` : ''}</td>
                  <td class="hide-sm">{fmtTime(d.lastSeen)}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <nav class="pager" aria-label="Pages">
            {f.cursor ? <a href={`/ui/devices?${keep}`}>First page</a> : null}
            {page.nextCursor ? <a href={`/ui/devices?${keep}${keep.size ? '&' : ''}cursor=${encodeURIComponent(page.nextCursor)}`} rel="next">Next page</a> : null}
          </nav>
        </Page>,
      );
    })
    .get('/:id', async (c) => {
      const id = c.req.param('id');
      const [d, events, minutes] = await Promise.all([
        ctx.api<{ id: string; groups: string[]; status: string; lastSeen: string | null; running: { model: string | null; release: number; sha256: string | null } | null; desiredRelease: number | null; trust: { keysetVersion: number | null; state: string } | null; degraded: string | null; protocol: { version: number; capabilities: string[] } }>(`/v1/devices/${encodeURIComponent(id)}`),
        ctx.data.deviceEvents(id, 50),
        ctx.data.telemetry(id, '1m'),
      ]);
      const points = minutes.length > 0 ? minutes : await ctx.data.telemetry(id, '1h');
      return c.html(
        <Page title={`Device ${d.id}`} path="/ui/devices" session={c.get('session')}>
          <dl class="kv">
            <dt>State</dt><dd>{d.status.replace('_', ' ')}{d.degraded ? ` (degraded: ${d.degraded})` : ''}</dd>
            <dt>Running</dt><dd id="running">{d.running ? `${d.running.model ?? '?'} release ${d.running.release}` : 'nothing'}</dd>
            <dt>Desired</dt><dd id="desired">{d.desiredRelease ?? '—'}</dd>
            <dt>Last seen</dt><dd>{fmtTime(d.lastSeen)}</dd>
            <dt>Groups</dt><dd>{d.groups.join(', ') || '—'}</dd>
            <dt>Trust</dt><dd>{d.trust ? `${d.trust.state}, key set ${d.trust.keysetVersion ?? '—'}` : '—'}</dd>
            <dt>Protocol</dt><dd>{d.protocol.version}</dd>
          </dl>
          <h2>Telemetry</h2>
          {points.length === 0 ? (
            <p class="muted">No telemetry yet.</p>
          ) : (
            <div class="grid2">
              <figure style="margin:0"><figcaption>Latency (ms)</figcaption><div class="chart" id="chart-latency" data-series={series(points, [['p50', (p) => p.latencyP50], ['p95', (p) => p.latencyP95]])}></div></figure>
              <figure style="margin:0"><figcaption>Requests and errors</figcaption><div class="chart" id="chart-requests" data-series={series(points, [['requests', (p) => p.requests], ['errors', (p) => p.errors]])}></div></figure>
              <figure style="margin:0"><figcaption>Memory (RSS, MB)</figcaption><div class="chart" id="chart-rss" data-series={series(points, [['RSS MB', (p) => (p.rssBytes === null ? null : p.rssBytes / 1048576)]])}></div></figure>
              <figure style="margin:0"><figcaption>Outbox depth and drops</figcaption><div class="chart" id="chart-outbox" data-series={series(points, [['depth', (p) => p.outboxDepth], ['dropped', (p) => p.outboxDropped]])}></div></figure>
            </div>
          )}
          <h2>Events</h2>
          {events.length === 0 ? (
            <p class="muted">No events recorded.</p>
          ) : (
            <table id="events">
              <thead>
                <tr><th>When</th><th>Event</th><th>Release</th><th>Reason</th></tr>
              </thead>
              <tbody>
                {events.map((e) => (
                  <tr>
                    <td>{fmtTime(e.at)}</td>
                    <td>{e.type}{e.source !== 'device' ? <span class="muted"> ({e.source})</span> : null}</td>
                    <td>{e.release ?? '—'}</td>
                    <td>{e.reason ?? ''}{e.detail ? <div class="muted">{e.detail}</div> : null}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </Page>,
      );
    });
}
