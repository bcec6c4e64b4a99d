import { Command } from 'commander';
import { runProgram } from '../shared/cli/run.js';

/** Composition root of the CLI: each capability registers its own subcommands. */
export function buildProgram(): Command {
  const program = new Command('apprentice')
    .description('Distil small student models from a cloud teacher and keep a fleet of edge devices running them')
    .version('0.1.0');
  return program;
}

const code = await runProgram(buildProgram(), process.argv);
process.exitCode = code;
