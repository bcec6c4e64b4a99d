import type { Hono } from 'hono';
import type { Logger } from '../../shared/log/index.js';
import { startHttpServer, type HttpServer } from '../../shared/http/serve.js';

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

export type CloudServer = HttpServer;

/**
 * Serves the cloud API with @hono/node-server; `stop()` grants requests in flight 10 s by default.
 *
 * @example
 * const server = await startCloudServer({ app, hostname: '0.0.0.0', port: 8787, log });
 * // on SIGTERM:
 * await server.stop();
 */
export function startCloudServer({ app, hostname = DEFAULT_CLOUD_HOST, port = DEFAULT_CLOUD_PORT, log }: CloudServerOptions): Promise<CloudServer> {
  // overrideGlobalObjects: false — the cloud process uses the global fetch/Request elsewhere.
  return startHttpServer({ app, hostname, port, log, name: 'cloud API', graceMs: 10_000, overrideGlobalObjects: false });
}
