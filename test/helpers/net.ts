/**
 * Small network/timing helpers shared by tests: free ports, TCP probes, polling.
 * Re-exported from `test/helpers/broker.ts`.
 */
import net from 'node:net';

/**
 * Asks the kernel for a free TCP port on `host` (bind to port 0, read it, close).
 * There is an unavoidable window before the caller binds it; callers that spawn a process on it
 * should retry on EADDRINUSE (startMosquitto does).
 *
 * @example
 * const port = await freePort();
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen({ port: 0, host, exclusive: true }, () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        srv.close();
        reject(new Error('freePort: no TCP address'));
        return;
      }
      srv.close((err) => (err ? reject(err) : resolve(addr.port)));
    });
  });
}

/** Resolves true when something accepts a TCP connection on host:port within timeoutMs. */
export function canConnect(port: number, host = '127.0.0.1', timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

export class WaitForTimeoutError extends Error {
  override readonly name = 'WaitForTimeoutError';
}

export interface WaitForOptions {
  /** Poll interval; default 20 ms. */
  intervalMs?: number;
  /** Prefix of the timeout error message, to say what was awaited. */
  message?: string;
}

type Truthy<T> = Exclude<T, false | null | undefined | 0 | ''>;

/**
 * Polls `cond` until it returns a truthy value (which is returned) or `timeoutMs` passes.
 * A throwing `cond` counts as "not yet"; its last error is quoted in the timeout error.
 *
 * @example
 * const msg = await waitFor(() => received.find((m) => m.topic === t), 2_000, { message: 'status message' });
 */
export async function waitFor<T>(
  cond: () => T | Promise<T>,
  timeoutMs = 5_000,
  { intervalMs = 20, message = 'condition' }: WaitForOptions = {},
): Promise<Truthy<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await cond();
      if (value) return value as Truthy<T>;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const why = lastError === undefined ? '' : ` (last error: ${lastError instanceof Error ? lastError.message : String(lastError)})`;
      throw new WaitForTimeoutError(`waitFor: ${message} not met within ${timeoutMs} ms${why}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Resolves after `ms`; for "prove absence" windows, after a positive control has already arrived. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
