import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import type { Hono } from 'hono';
import { silentLogger, type Logger } from '../../shared/log/index.js';

export const DEFAULT_CLOUD_HOST = '127.0.0.1';
export const DEFAULT_CLOUD_PORT = 8787;

export interface CloudServerOptions {
  app: Hono;
  /** Bind address; loopback by default (put a TLS reverse proxy in front to expose it). */
  hostname?: string;
  /** 0 picks a free port. */
  port?: number;
  log?: Logger;
}

export interface CloudServer {
  readonly url: string;
  readonly port: number;
  /** Stops accepting, lets requests in flight finish (up to `graceMs`), then closes remaining sockets. Idempotent. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Serves the cloud API with @hono/node-server.
 *
 * @example
 * const server = await startCloudServer({ app, hostname: '0.0.0.0', port: 8787, log });
 * // on SIGTERM:
 * await server.stop();
 */
export function startCloudServer({ app, hostname = DEFAULT_CLOUD_HOST, port = DEFAULT_CLOUD_PORT, log = silentLogger }: CloudServerOptions): Promise<CloudServer> {
  return new Promise((resolve, reject) => {
    // overrideGlobalObjects: false — the cloud process uses the global fetch/Request elsewhere.
    const server = serve({ fetch: app.fetch, hostname, port, overrideGlobalObjects: false }, (info: AddressInfo) => {
      server.off('error', reject);
      const url = `http://${info.family === 'IPv6' ? `[${info.address}]` : info.address}:${info.port}`;
      log.info({ url }, 'cloud API listening');
      let stopping: Promise<void> | undefined;
      resolve({
        url,
        port: info.port,
        stop(graceMs = 10_000) {
          stopping ??= new Promise<void>((done) => {
            const s = server as Server;
            const force = setTimeout(() => s.closeAllConnections(), graceMs);
            // Keep-alive sockets would hold close() open until they time out: close idle ones now and as
            // in-flight requests (e.g. artifact downloads) finish.
            const sweep = setInterval(() => s.closeIdleConnections(), 25);
            force.unref();
            sweep.unref();
            s.close(() => {
              clearTimeout(force);
              clearInterval(sweep);
              log.info('cloud API stopped');
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
