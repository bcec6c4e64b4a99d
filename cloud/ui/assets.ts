import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Hono } from 'hono';
import { CONSOLE_CSS, CONSOLE_JS } from './static.js';

interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

/**
 * Every script and stylesheet the console uses, read once from the installed npm packages (htmx, its SSE
 * extension, uPlot) or from static.ts: nothing from a CDN, so the console works in an air-gapped plant.
 * They hold no fleet data, so they are the only /ui/ paths served without a session (the login page needs
 * the stylesheet). Versioned by content hash in the ETag; cached for a day.
 */
const require = createRequire(import.meta.url);
const FROM_PACKAGES: Record<string, [string, string]> = {
  'htmx.min.js': ['htmx.org/dist/htmx.min.js', 'text/javascript'],
  'htmx-sse.min.js': ['htmx-ext-sse/dist/sse.min.js', 'text/javascript'],
  'uPlot.min.js': ['uplot/dist/uPlot.iife.min.js', 'text/javascript'],
  'uPlot.min.css': ['uplot/dist/uPlot.min.css', 'text/css'],
};

function asset(body: Buffer, type: string): Asset {
  return { body, type: `${type}; charset=utf-8`, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` };
}

let loaded: Map<string, Asset> | undefined;
function assets(): Map<string, Asset> {
  if (loaded) return loaded;
  loaded = new Map(Object.entries(FROM_PACKAGES).map(([name, [spec, type]]) => [name, asset(readFileSync(require.resolve(spec)), type)]));
  loaded.set('console.css', asset(Buffer.from(CONSOLE_CSS), 'text/css'));
  loaded.set('console.js', asset(Buffer.from(CONSOLE_JS), 'text/javascript'));
  return loaded;
}

export const ASSET_NAMES = [...Object.keys(FROM_PACKAGES), 'console.css', 'console.js'];

export function assetRoutes(): Hono {
  return new Hono().get('/:name', (c) => {
    const a = assets().get(c.req.param('name'));
    if (!a) return c.json({ error: { code: 'not_found', message: `no asset ${c.req.param('name')}` } }, 404);
    c.header('ETag', a.etag);
    c.header('Cache-Control', 'public, max-age=86400');
    if (c.req.header('if-none-match') === a.etag) return c.body(null, 304);
    return c.body(new Uint8Array(a.body), 200, { 'Content-Type': a.type });
  });
}
