import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { serve } from '@hono/node-server';
import type { Hono } from 'hono';
import { silentLogger, type Logger } from '../../shared/log/index.js';

export interface LocalServerOptions {
  app: Hono;
  /** Bind address; loopback by default: the API has no authentication. */
  hostname?: string;
  /** 0 picks a free port. */
  port?: number;
  log?: Logger;
}

export interface LocalServer {
  readonly url: string;
  readonly port: number;
  /** Stops accepting, lets requests in flight finish (up to `graceMs`), then closes remaining sockets. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Serves the local API with @hono/node-server.
 *
 * @example
 * const server = await startLocalServer({ app, hostname: '127.0.0.1', port: 8080 });
 * // … on SIGTERM:
 * await server.stop();
 */
export function startLocalServer({ app, hostname = '127.0.0.1', port = 8080, log = silentLogger }: LocalServerOptions): Promise<LocalServer> {
  return new Promise((resolve, reject) => {
    // overrideGlobalObjects stays on (the default): hono's c.json() then builds @hono/node-server's
    // lightweight Response, written straight to the socket. With it off, every answer is a WHATWG
    // Response read back through a ReadableStream: about a fifth of the CPU per request in the edge bench.
    const server = serve({ fetch: app.fetch, hostname, port }, (info: AddressInfo) => {
      server.off('error', reject);
      const url = `http://${info.family === 'IPv6' ? `[${info.address}]` : info.address}:${info.port}`;
      log.info({ url }, 'local API listening');
      let stopping: Promise<void> | undefined;
      resolve({
        url,
        port: info.port,
        stop(graceMs = 5_000) {
          stopping ??= new Promise<void>((done) => {
            const s = server as Server;
            const force = setTimeout(() => s.closeAllConnections(), graceMs);
            // Keep-alive sockets hold close() open until they time out: close each one as soon as it has
            // no request in flight (now, and again as in-flight requests finish).
            const sweep = setInterval(() => s.closeIdleConnections(), 25);
            force.unref();
            sweep.unref();
            s.close(() => {
              clearTimeout(force);
              clearInterval(sweep);
              log.info('local API stopped');
              done();
            });
            s.closeIdleConnections();
          });
          return stopping;
        },
      });
    }) as Server;
    server.once('error', reject);
  });
}
