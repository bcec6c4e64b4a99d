/**
 * A plain HTTP source for agent release tarballs in tests (issue 14): serves what `serve` registered,
 * 404 for anything else, and counts requests. The edge's HTTP artifact source downloads from it like
 * from the cloud's artifact route.
 */
import { createServer } from 'node:http';

export interface ArtifactServer {
  /** `http://127.0.0.1:<port><path>`. */
  url(path: string): string;
  /** Serves `body` at `path` from now on; returns its URL. */
  serve(path: string, body: Buffer): string;
  /** Requests received so far (served or not). */
  requests(): number;
  close(): Promise<void>;
}

export async function startArtifactServer(): Promise<ArtifactServer> {
  const served = new Map<string, Buffer>();
  let requests = 0;
  const server = createServer((req, res) => {
    requests++;
    const body = served.get(req.url ?? '');
    if (!body) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-length': body.length }).end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  const url = (path: string) => `http://127.0.0.1:${port}${path}`;
  return {
    url,
    serve(path, body) {
      served.set(path, body);
      return url(path);
    },
    requests: () => requests,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
