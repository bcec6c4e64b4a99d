import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ActivationError, type ModelHost } from '../../../edge/updates/types.js';
import type { DeviceEvent, Manifest } from '../../../shared/protocol/index.js';

/** A ModelHost that records calls, checks the file it is given, and fails on demand. */
export class FakeHost implements ModelHost {
  readonly calls: Array<{ path: string; release: number; sha256: string; fileSha256: string }> = [];
  readonly failures = new Map<string, 'load_failed' | 'self_test_failed' | 'plain'>();

  async activate(path: string, manifest: Manifest): Promise<void> {
    const fileSha256 = createHash('sha256').update(await readFile(path)).digest('hex');
    this.calls.push({ path, release: manifest.release, sha256: manifest.artifact.sha256, fileSha256 });
    const f = this.failures.get(manifest.artifact.sha256);
    if (f === 'plain') throw new Error('onnxruntime: protobuf parsing failed');
    if (f) throw new ActivationError(f, f === 'self_test_failed' ? 'self-test output off by 0.7' : 'cannot create session');
  }

  get active(): string | undefined {
    return this.calls.at(-1)?.sha256;
  }
}

export class EventLog {
  readonly events: DeviceEvent[] = [];
  readonly emit = (e: DeviceEvent): void => {
    this.events.push(e);
  };
  of(type: DeviceEvent['type']): DeviceEvent[] {
    return this.events.filter((e) => e.type === type);
  }
  last(): DeviceEvent | undefined {
    return this.events.at(-1);
  }
}

export type ServeMode =
  | { kind: 'ok' }
  /** Ignore Range and always answer 200 with the whole body. */
  | { kind: 'ignore-range' }
  /** Send the first `bytes` bytes then destroy the connection, for the first `times` requests. */
  | { kind: 'cut'; bytes: number; times: number }
  /** Send the body plus `extra` bytes; `declare` chooses whether Content-Length tells the truth about it. */
  | { kind: 'extra'; extra: number; declare: 'none' | 'honest' }
  /** Send headers, then nothing until the client goes away. */
  | { kind: 'stall' }
  | { kind: 'status'; status: number; times: number };

/** A local HTTP artifact server with Range support and misbehaviours on demand. */
export class ArtifactServer {
  readonly requests: Array<{ path: string; range: string | undefined }> = [];
  private readonly files = new Map<string, { body: Buffer; mode: ServeMode; served: number }>();
  private server: Server | undefined;
  private base = '';

  async start(): Promise<this> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.base = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  /** Serves `body` at a path and returns its URL. */
  serve(name: string, body: Buffer, mode: ServeMode = { kind: 'ok' }): string {
    this.files.set(`/${name}`, { body, mode, served: 0 });
    return `${this.base}/${name}`;
  }

  setMode(name: string, mode: ServeMode): void {
    const f = this.files.get(`/${name}`);
    if (f) f.mode = mode;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    this.requests.push({ path: req.url ?? '', range: req.headers.range });
    const f = this.files.get(req.url ?? '');
    if (!f) {
      res.writeHead(404).end();
      return;
    }
    const n = f.served++;
    const { body, mode } = f;
    if (mode.kind === 'status' && n < mode.times) {
      res.writeHead(mode.status).end();
      return;
    }
    if (mode.kind === 'stall') {
      res.writeHead(200, { 'content-length': body.length });
      res.flushHeaders();
      return;
    }
    if (mode.kind === 'extra') {
      const all = Buffer.concat([body, Buffer.alloc(mode.extra, 7)]);
      res.writeHead(200, mode.declare === 'honest' ? { 'content-length': all.length } : {});
      res.end(all);
      return;
    }
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    let start = 0;
    if (m && mode.kind !== 'ignore-range') {
      start = Number(m[1]);
      res.writeHead(206, { 'content-length': body.length - start, 'content-range': `bytes ${start}-${body.length - 1}/${body.length}` });
    } else {
      res.writeHead(200, { 'content-length': body.length });
    }
    const slice = body.subarray(start);
    if (mode.kind === 'cut' && n < mode.times) {
      res.write(slice.subarray(0, mode.bytes), () => setTimeout(() => res.destroy(), 20));
      return;
    }
    res.end(slice);
  }
}

/** Resolves when `cond` holds, polling; fails after `ms`. */
export async function waitFor(cond: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
