import { Command } from 'commander';
import { distillCommand } from '../cloud/distill/cli.js';
import { keysCommand } from '../cloud/keys/cli.js';
import { brokerAuthCommand, provisionCommand } from '../cloud/provision/cli.js';
import { teacherCommand } from '../cloud/teacher/cli.js';
import { dataCommand } from '../shared/data/cli.js';
import { edgeCommand } from '../edge/cli.js';
import { cloudCommand } from '../cloud/cli.js';
import { demoCommand } from '../cloud/demo/cli.js';
import { simCommand } from '../edge/sim/cli.js';
import { rolloutCommand } from '../cloud/rollouts/cli.js';
import { agentCommand } from '../cloud/agents/cli.js';
import { releaseCommand } from '../cloud/rounds/release-cli.js';
import { devicesCommand, fleetCommand, roundsCommand } from '../cloud/fleet/cli.js';
import { examplesCommand } from '../cloud/rounds/quarantine-cli.js';
import { runProgram } from '../shared/cli/run.js';
import { backupCommand, restoreCommand } from '../cloud/backup/cli.js';

/** Composition root of the CLI: each capability registers its own subcommands. */
export function buildProgram(): Command {
  const program = new Command('apprentice')
    .description('Distil small student models from a cloud teacher and keep a fleet of edge devices running them')
    .version('0.1.0')
    // Program options only before the subcommand: `apprentice agent build --version 0.2.0` is the agent's version, not this CLI's.
    .enablePositionalOptions();
  program.addCommand(teacherCommand());
  program.addCommand(distillCommand());
  program.addCommand(dataCommand());
  program.addCommand(keysCommand());
  program.addCommand(provisionCommand());
  program.addCommand(brokerAuthCommand());
  program.addCommand(edgeCommand());
  program.addCommand(cloudCommand());
  program.addCommand(demoCommand());
  program.addCommand(simCommand());
  program.addCommand(rolloutCommand());
  program.addCommand(agentCommand());
  program.addCommand(releaseCommand());
  program.addCommand(backupCommand());
  program.addCommand(restoreCommand());
  program.addCommand(devicesCommand());
  program.addCommand(fleetCommand());
  program.addCommand(roundsCommand());
  program.addCommand(examplesCommand());
  return program;
}

process.exitCode = await runProgram(buildProgram(), process.argv);
