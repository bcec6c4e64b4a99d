import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import type { Hono } from 'hono';
import { silentLogger, type Logger } from '../log/index.js';

export interface HttpServer {
  readonly url: string;
  readonly port: number;
  /** Stops accepting, lets requests in flight finish (up to `graceMs`), then closes remaining sockets. Idempotent. */
  stop(graceMs?: number): Promise<void>;
}

export interface HttpServerOptions {
  app: Hono;
  /** Bind address; loopback by default. */
  hostname?: string;
  /** 0 (the default) picks a free port. */
  port?: number;
  log?: Logger;
  /** Names the server in its log lines: `<name> listening`, `<name> stopped`. */
  name?: string;
  /** `stop()`'s grace when called without one. */
  graceMs?: number;
  /**
   * @hono/node-server's own: on (its default), hono's c.json() builds the adapter's lightweight Response,
   * written straight to the socket; off leaves the global fetch/Request untouched for the rest of the process.
   */
  overrideGlobalObjects?: boolean;
}

/**
 * Serves a hono app with @hono/node-server; resolves once listening (rejects if it cannot bind).
 *
 * @example
 * const server = await startHttpServer({ app, hostname: '127.0.0.1', port: 8080, name: 'local API', log });
 * // on SIGTERM:
 * await server.stop();
 */
export function startHttpServer({
  app,
  hostname = '127.0.0.1',
  port = 0,
  log = silentLogger,
  name = 'HTTP server',
  graceMs: defaultGraceMs = 5_000,
  overrideGlobalObjects = true,
}: HttpServerOptions): Promise<HttpServer> {
  return new Promise((resolve, reject) => {
    const server = serve({ fetch: app.fetch, hostname, port, overrideGlobalObjects }, (info: AddressInfo) => {
      server.off('error', reject);
      const url = `http://${info.family === 'IPv6' ? `[${info.address}]` : info.address}:${info.port}`;
      log.info({ url }, `${name} listening`);
      let stopping: Promise<void> | undefined;
      resolve({
        url,
        port: info.port,
        stop(graceMs = defaultGraceMs) {
          stopping ??= new Promise<void>((done) => {
            const s = server as Server;
            const force = setTimeout(() => s.closeAllConnections(), graceMs);
            // Keep-alive sockets hold close() open until they time out: close each one as soon as it has
            // no request in flight (now, and again as in-flight requests, e.g. artifact downloads, finish).
            const sweep = setInterval(() => s.closeIdleConnections(), 25);
            force.unref();
            sweep.unref();
            s.close(() => {
              clearTimeout(force);
              clearInterval(sweep);
              log.info(`${name} stopped`);
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
