import { Command, Option } from 'commander';
import { parsePositiveInt, UsageError } from '../../shared/cli/errors.js';
import { DEMO_DEFAULTS } from './options.js';

interface DemoFlags {
  rounds?: string;
  teacher?: string;
  dataDir: string;
  cacheDir: string;
  fresh?: boolean;
  devices: string;
  traffic: string;
  evalPool: string;
  student: string;
  baseLimit: string;
  epochs: string;
  json?: boolean;
  cohorts?: boolean;
  seed?: string;
}

/**
 * `apprentice demo` (= `npm start`): the closed loop on one machine. Heavy modules (tfjs, ORT, SQLite,
 * the broker) are loaded only when the command runs.
 */
export function demoCommand(): Command {
  return new Command('demo')
    .description('Run the whole loop on this machine: embedded broker + cloud, 3 edge daemons, a teacher, rounds of distillation from the hard examples the devices report')
    .option('--rounds <n>', 'stop after round N (round 0 from clean data, then N rounds from hard examples) and print a summary; default: run until Ctrl-C')
    .option('--teacher <file>', 'use this ONNX teacher (one input [n,784] in [0,1], logits out) instead of the reference teacher')
    .option('--data-dir <dir>', 'cloud registry, device data, logs and summary.json', DEMO_DEFAULTS.dataDir)
    .option('--cache-dir <dir>', 'where the reference teacher is cached after its first training', DEMO_DEFAULTS.cacheDir)
    .option('--fresh', 'wipe --data-dir first (the teacher cache is kept)')
    .addOption(new Option('--devices <n>', 'edge daemons, 1..3 (rotation, thickness, noise)').default(String(DEMO_DEFAULTS.devices)))
    .addOption(new Option('--traffic <n>', "shifted test images sent to each device per round, from its traffic pool").default(String(DEMO_DEFAULTS.traffic)))
    .addOption(new Option('--eval-pool <n>', "test images per device held out of all traffic; every accuracy is measured on them").default(String(DEMO_DEFAULTS.evalPool)))
    .addOption(new Option('--student <arch>', 'student architecture (linear | mlp:H1,... | cnn:F1,...[/H] | dscnn:F1,...[/H]; conv students read the 784 pixels as 28×28×1)').default(DEMO_DEFAULTS.student))
    .addOption(new Option('--base-limit <n>', 'clean MNIST training images in every transfer set').default(String(DEMO_DEFAULTS.baseLimit)))
    .addOption(new Option('--epochs <n>', 'distillation epochs per round').default(String(DEMO_DEFAULTS.epochs)))
    .option('--json', 'print the final summary as JSON on stdout instead of the table')
    .option('--cohorts', 'one cohort per device (issue 13): each round also trains a student per device; the table shows cohort / shared / teacher accuracy per device')
    .addOption(new Option('--seed <n>', 'distillation seed of every round').default('1'))
    .addHelpText(
      'after',
      `
What it does:
  1. trains (first run, ~3 min on 2 cores, cached) or loads the teacher: ${DEMO_DEFAULTS.teacherArch} on MNIST with
     heavy augmentation (rotation, stroke thickness, translation, noise);
  2. starts the embedded MQTT broker and the cloud API in this process (free loopback ports), and one
     \`apprentice edge\` process per device, each provisioned through POST /v1/devices;
  3. round 0: distils the student (${DEMO_DEFAULTS.student}) from clean MNIST, signs it, rolls it out canary-first;
  4. splits the MNIST *test* set into disjoint per-device slices, each into a traffic pool and an
     evaluation pool (--eval-pool); sends each device's local API a stream from its traffic pool under
     its own shift; the demo knows the labels, the devices and the cloud never see them;
  5. the devices select hard examples and send them to the cloud; the scheduler runs the next round
     from them; one table row per round: student vs teacher accuracy on each device's evaluation pool
     (images no device was ever sent; the student is the artifact the device serves, by sha256), hard
     examples ingested, time from round start to every device serving the release.

Output: the table on stdout, progress on stderr, logs in DATA_DIR/cloud.log and DATA_DIR/devices/*/edge.log,
the summary in DATA_DIR/summary.json. Ctrl-C stops the daemons (SIGTERM) and the cloud cleanly.

Examples:
  npm start -- --rounds 3
  npm start -- --cohorts --rounds 3
  apprentice demo --fresh --rounds 3 --data-dir /tmp/demo
  apprentice demo --teacher my-teacher.onnx`,
    )
    .action(async (f: DemoFlags) => {
      const rounds = f.rounds === undefined ? undefined : f.rounds === '0' ? 0 : parsePositiveInt('--rounds', f.rounds);
      const devices = parsePositiveInt('--devices', f.devices);
      if (devices > 3) throw new UsageError(`--devices: at most 3 (one per shift), got ${devices}`);
      // The one grammar of cloud/models (it grows cnn:/dscnn: there); a bad spec fails here, not in round 0.
      const { parseArch } = await import('../models/spec.js');
      parseArch(f.student, '--student');
      const evalPool = parsePositiveInt('--eval-pool', f.evalPool);
      const { splitPools, MNIST_TEST_COUNT } = await import('./pools.js');
      splitPools(MNIST_TEST_COUNT, devices, evalPool); // refuses a pool that leaves no traffic, before anything starts
      const { existsSync } = await import('node:fs');
      if (f.teacher !== undefined && !existsSync(f.teacher)) throw new UsageError(`--teacher ${f.teacher}: no such file`);
      const opts = {
        dataDir: f.dataDir,
        cacheDir: f.cacheDir,
        fresh: f.fresh === true,
        rounds,
        teacher: f.teacher,
        devices,
        traffic: parsePositiveInt('--traffic', f.traffic),
        evalPool,
        student: f.student,
        baseLimit: parsePositiveInt('--base-limit', f.baseLimit),
        epochs: parsePositiveInt('--epochs', f.epochs),
        cohorts: f.cohorts === true,
        seed: parsePositiveInt('--seed', f.seed ?? '1'),
      };
      const { runDemo, summaryLines } = await import('./run.js');
      const ac = new AbortController();
      let signals = 0;
      const onSignal = () => {
        signals++;
        if (signals > 1) process.exit(130);
        process.stderr.write('\nstopping (Ctrl-C again to exit at once)…\n');
        ac.abort();
      };
      const print = (line: string) => process.stdout.write(line + '\n');
      const summary = await runDemo({
        ...DEMO_DEFAULTS,
        ...opts,
        hardExampleShare: DEMO_DEFAULTS.hardExampleShare,
        out: f.json ? () => undefined : print,
        progress: true,
        signal: ac.signal,
        // Until the teacher is ready, Ctrl-C keeps its default (exit at once): nothing is running yet.
        onStarting: () => {
          process.on('SIGINT', onSignal);
          process.on('SIGTERM', onSignal);
        },
      });
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      if (f.json) print(JSON.stringify(summary, null, 2));
      else for (const line of summaryLines(summary)) print(line);
      print(`summary written to ${summary.devices.length ? `${opts.dataDir}/summary.json` : opts.dataDir}`);
      // Stray handles (ORT, sockets) must not keep a finished demo alive.
      setTimeout(() => process.exit(process.exitCode ?? 0), 2000).unref();
    });
}
