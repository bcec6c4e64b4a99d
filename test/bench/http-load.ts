/**
 * The HTTP load generator of the edge benches, run as its own process (`node http-load.js '<spec>'`,
 * or `runLoad(spec)`), so it does not share the server's event loop: N keep-alive sockets, each sending
 * one request and waiting for its full response before the next (closed loop, like autocannon). It
 * writes pre-serialised HTTP/1.1 requests straight to `net` sockets and only parses status and
 * Content-Length back: a Node `http.Agent` client would eat much of the 2 shared cores it competes for.
 */
import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { percentileOfSorted } from '../../shared/util/percentile.js';

export const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

export interface LoadSpec {
  port: number;
  method: 'GET' | 'POST';
  path: string;
  bodies: string[];
  connections: number;
  durationMs: number;
  warmupMs: number;
}

export interface LoadResult {
  requests: number;
  /** Including the warm-up: what the server's CPU time is divided by. */
  totalRequests: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  non2xx: number;
  socketErrors: number;
}

export async function loadChild(spec: LoadSpec): Promise<LoadResult> {
  const reqs = spec.bodies.map((b) =>
    Buffer.from(
      spec.method === 'GET'
        ? `GET ${spec.path} HTTP/1.1\r\nHost: bench\r\n\r\n`
        : `POST ${spec.path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(b)}\r\n\r\n${b}`,
    ),
  );
  const latencies: number[] = [];
  let requests = 0;
  let totalRequests = 0;
  let non2xx = 0;
  let socketErrors = 0;
  const start = performance.now();
  const measureFrom = start + spec.warmupMs;
  const end = measureFrom + spec.durationMs;

  const runConn = (k: number) =>
    new Promise<void>((done) => {
      const sock: Socket = connect({ port: spec.port, host: '127.0.0.1', noDelay: true });
      let buf: Buffer = Buffer.alloc(0);
      let sentAt = 0;
      let i = k;
      const send = () => {
        if (performance.now() >= end) {
          sock.end();
          return done();
        }
        sentAt = performance.now();
        sock.write(reqs[i++ % reqs.length]!);
      };
      sock.on('connect', send);
      sock.on('error', () => {
        socketErrors++;
        done();
      });
      sock.on('data', (chunk: Buffer) => {
        buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
        for (;;) {
          const headEnd = buf.indexOf('\r\n\r\n');
          if (headEnd < 0) return;
          const head = buf.subarray(0, headEnd).toString('latin1');
          const m = /\r\ncontent-length:\s*(\d+)/i.exec(head);
          const len = m ? Number(m[1]) : 0;
          if (buf.length < headEnd + 4 + len) return;
          const status = Number(head.slice(9, 12));
          buf = buf.subarray(headEnd + 4 + len);
          const now = performance.now();
          totalRequests++;
          if (sentAt >= measureFrom) {
            requests++;
            latencies.push(now - sentAt);
            if (status < 200 || status > 299) non2xx++;
          }
          send();
        }
      });
    });
  await Promise.all(Array.from({ length: spec.connections }, (_, k) => runConn(k)));
  latencies.sort((a, b) => a - b);
  return { requests, totalRequests, rps: round(requests / (spec.durationMs / 1000), 0), p50Ms: round(percentileOfSorted(latencies, 50), 3), p99Ms: round(percentileOfSorted(latencies, 99), 3), non2xx, socketErrors };
}

const SELF = fileURLToPath(import.meta.url);

/** Runs one load in a child process; resolves with its result. */
export function runLoad(spec: LoadSpec): Promise<LoadResult> {
  return new Promise((res, rej) => {
    const cp = spawn(process.execPath, [SELF, JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    cp.stdout.on('data', (d: Buffer) => (out += d.toString()));
    cp.on('error', rej);
    cp.on('exit', (code) => (code === 0 ? res(JSON.parse(out) as LoadResult) : rej(new Error(`load child exited with ${code}`))));
  });
}

if (process.argv[1] === SELF) {
  const r = await loadChild(JSON.parse(process.argv[2]!) as LoadSpec);
  process.stdout.write(`${JSON.stringify(r)}\n`);
}
