import { Command } from 'commander';
import { createLogger } from '../shared/log/index.js';
import { ConfigError, envHelp, loadEdgeConfig } from './config/index.js';
import type { EdgeDaemon } from './daemon.js';
import { RESTART_EXIT_CODE } from './agent/exit-code.js';

/** How long after a clean stop we let stray handles (sockets, timers) finish before exiting anyway. */
const EXIT_GRACE_MS = 3_000;

function printConfigError(err: ConfigError): void {
  // One `path: message` line per issue (STYLE.md 3); exit code 2.
  for (const line of err.issues) process.stderr.write(`${line}\n`);
  process.exitCode = 2;
}

/**
 * `apprentice edge`: runs the edge daemon until SIGTERM/SIGINT, then stops every module and exits 0.
 * The systemd unit runs `apprentice edge --config /etc/apprentice/edge.json`.
 */
export function edgeCommand(): Command {
  return new Command('edge')
    .description('Run the edge daemon: local inference API, signed model updates over MQTT, hard examples to the cloud')
    .option('-c, --config <file>', 'edge.json (without it the config comes from APPRENTICE_* variables alone)')
    .option('--data-dir <dir>', 'data directory (overrides dataDir and APPRENTICE_DATA_DIR)')
    .option('--bind <host:port>', 'local API address (overrides api.bind and APPRENTICE_API_BIND)')
    .addHelpText(
      'after',
      `\nEvery config field can come from the environment (flags > environment > file > defaults);\nstring fields verbatim, the others as JSON:\n${envHelp()}\n\nInvalid config: one "path: message" line per problem, exit code 2.`,
    )
    .action(async (opts: { config?: string; dataDir?: string; bind?: string }) => {
      let config;
      try {
        config = await loadEdgeConfig({ file: opts.config, overrides: { dataDir: opts.dataDir, 'api.bind': opts.bind } });
      } catch (err) {
        if (err instanceof ConfigError) return printConfigError(err);
        throw err;
      }
      const log = createLogger({ name: 'edge' });
      // A stray rejection somewhere must not take inference down (STYLE.md 5); it is a bug, so log it loudly.
      process.on('unhandledRejection', (reason) => log.error({ err: reason }, 'daemon/unhandled-rejection'));

      // Loaded here, not at the top: other commands need not load onnxruntime and MQTT.
      const { EdgeDaemon: Daemon } = await import('./daemon.js');
      let daemon: EdgeDaemon;
      // An agent update switched `current` (issue 14): stop cleanly, then exit with the code the unit's
      // RestartForceExitStatus= restarts on.
      let restart!: () => void;
      const restartRequested = new Promise<'restart'>((resolve) => (restart = () => resolve('restart')));
      try {
        daemon = await Daemon.create(config, { log, onRestart: () => restart() });
      } catch (err) {
        if (err instanceof ConfigError) return printConfigError(err);
        throw err;
      }
      const signalled = new Promise<NodeJS.Signals>((resolve) => {
        let seen = false;
        const on = (sig: NodeJS.Signals): void => {
          if (seen) {
            log.warn({ signal: sig }, 'daemon/second-signal: exiting now');
            process.exit(1);
          }
          seen = true;
          resolve(sig);
        };
        process.on('SIGTERM', on);
        process.on('SIGINT', on);
      });
      try {
        await daemon.start();
      } catch (err) {
        await daemon.stop();
        throw err;
      }
      const sig = await Promise.race([signalled, restartRequested]);
      log.info({ signal: sig }, 'daemon/stopping');
      await daemon.stop();
      const code = sig === 'restart' ? RESTART_EXIT_CODE : 0;
      process.exitCode = code;
      setTimeout(() => process.exit(code), EXIT_GRACE_MS).unref();
    });
}
