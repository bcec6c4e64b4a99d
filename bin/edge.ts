import { edgeCommand } from '../edge/cli.js';
import { runProgram } from '../shared/cli/run.js';

/**
 * The edge daemon's own entry (`apprentice-edge --config edge.json`), what the systemd unit and the lean
 * edge install run. It loads the edge and shared modules only: `bin/main.ts` registers every command,
 * whose imports (the cloud, drizzle, the demo) cost the daemon ~33 MB of anonymous memory it never
 * uses (issue 9). `apprentice edge` runs the same command from the full CLI.
 */
process.exitCode = await runProgram(edgeCommand().name('apprentice-edge'), process.argv);
