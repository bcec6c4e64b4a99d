import { Command, CommanderError } from 'commander';
import { UsageError } from './errors.js';

/**
 * Runs a commander program with the project's exit-code contract:
 * 0 on success and for --help, 2 with a one-line reason for bad arguments or bad input,
 * 1 for anything else that went wrong.
 */
export async function runProgram(program: Command, argv: string[]): Promise<number> {
  const applyContract = (cmd: Command): void => {
    cmd.exitOverride();
    cmd.showSuggestionAfterError(true);
    cmd.configureOutput({
      // commander prints its own "error: ..." line; keep it to one line on stderr.
      outputError: (str, write) => write(str.trim().split('\n')[0] + '\n'),
    });
    for (const sub of cmd.commands) applyContract(sub);
  };
  applyContract(program);
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0;
      return 2;
    }
    if (err instanceof UsageError) {
      process.stderr.write(`error: ${err.message}\n`);
      return 2;
    }
    const e = err as Error;
    process.stderr.write(`error: ${e?.message ?? String(err)}\n`);
    if (process.env.APPRENTICE_DEBUG) process.stderr.write(`${e?.stack ?? ''}\n`);
    return 1;
  }
}
