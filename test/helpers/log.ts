import { Writable } from 'node:stream';
import { createLogger, type Logger } from '../../shared/log/index.js';

/**
 * A real pino logger whose JSON lines are kept in memory, so a test can assert that a bound logged
 * what it refused (pino writes synchronously to a plain Writable).
 */
export function captureLogger(level = 'debug'): { log: Logger; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  const log = createLogger({ level, destination });
  const lines = () =>
    chunks
      .join('')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { log, lines };
}
