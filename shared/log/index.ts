import { pino, type Logger, type LoggerOptions } from 'pino';

export type { Logger };

export interface LogOptions {
  /** pino level; defaults to `APPRENTICE_LOG_LEVEL` or `info`. */
  level?: string;
  /** Module name written as `module` on every line. */
  name?: string;
  /** Where lines go: stderr by default, so stdout stays clean for `--json` output. */
  destination?: NodeJS.WritableStream;
}

/**
 * Creates a structured JSON logger. Logs go to stderr so that commands can print results on stdout.
 *
 * @example
 * const log = createLogger({ name: 'edge/updates' });
 * log.info({ release: 3 }, 'installed');
 */
export function createLogger({ level, name, destination }: LogOptions = {}): Logger {
  const opts: LoggerOptions = {
    level: level ?? process.env.APPRENTICE_LOG_LEVEL ?? 'info',
    base: name ? { module: name } : {},
  };
  return pino(opts, (destination ?? process.stderr) as pino.DestinationStream);
}

/** A logger that drops everything; for tests and library use. */
export const silentLogger: Logger = pino({ level: 'silent' });
