import { Command, Option } from 'commander';
import { epochBars } from '../../shared/cli/epoch-bars.js';
import { parseNonNegativeInt, parseNumber, parsePositiveInt } from '../../shared/cli/errors.js';
import { parseArch } from '../models/spec.js';
import { BACKEND_CHOICES, type BackendChoice } from '../tf/choices.js';


export function teacherCommand(): Command {
  const teacher = new Command('teacher').description('Work with teacher models');
  teacher
    .command('train')
    .description('Train a large reference teacher in tfjs and export it to ONNX (outputs logits)')
    .requiredOption('--data <spec>', 'labelled training set, e.g. mnist:train')
    .option('--test <spec>', 'labelled test set to score the exported model on, e.g. mnist:test')
    .option('--arch <arch>', 'architecture: mlp:H1,H2,... or linear', 'mlp:1200,1200')
    .option('--dropout <p>', 'dropout on hidden layers', '0.5')
    .option('--input-dropout <p>', 'dropout on the input', '0.2')
    .option('--epochs <n>', 'training epochs', '20')
    .option('--batch-size <n>', 'minibatch size', '128')
    .option('--lr <rate>', 'Adam learning rate (cosine-decayed to 0)', '0.001')
    .option('--jitter <px>', 'random translation of up to N pixels (Hinton et al. used 2)', '0')
    .option('--limit <n>', 'use only the first N training examples')
    .option('--seed <n>', 'random seed', '1')
    .requiredOption('--out <file>', 'output ONNX file; a <file>.report.json is written beside it')
    .addOption(new Option('--backend <name>', 'tfjs backend').choices([...BACKEND_CHOICES]).default('auto'))
    .option('--json', 'print the report as JSON on stdout', false)
    .addHelpText('after', '\nExample:\n  apprentice teacher train --data mnist:train --test mnist:test --arch mlp:1200,1200 --dropout 0.5 --jitter 2 --epochs 20 --out teacher.onnx')
    .action(async (o) => {
      parseArch(o.arch);
      const bars = epochBars(!o.json);
      const { trainTeacher } = await import('./train-teacher.js');
      const report = await trainTeacher({
        data: o.data,
        test: o.test,
        limit: o.limit === undefined ? undefined : parsePositiveInt('--limit', o.limit),
        arch: o.arch,
        dropout: parseNumber('--dropout', o.dropout, { min: 0, max: 0.95 }),
        inputDropout: parseNumber('--input-dropout', o.inputDropout, { min: 0, max: 0.95 }),
        epochs: parsePositiveInt('--epochs', o.epochs),
        batchSize: parsePositiveInt('--batch-size', o.batchSize),
        learningRate: parseNumber('--lr', o.lr, { min: 1e-7, max: 10 }),
        jitter: parseNonNegativeInt('--jitter', o.jitter),
        seed: parseNonNegativeInt('--seed', o.seed),
        out: o.out,
        backend: o.backend as BackendChoice,
        events: { phase: bars.phase, epoch: (p) => bars.epoch('teacher', p) },
      });
      bars.stop();
      if (o.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
      else
        process.stdout.write(
          `teacher ${report.arch} (${report.params} params, ${report.bytes} B) on ${report.backend}: ` +
            (report.test ? `test errors ${report.test.errors}/${report.test.count} (${(100 * report.test.accuracy).toFixed(2)}%)` : 'no --test given') +
            `, ${Math.round(report.training.samplesPerSec)} samples/s\nwrote ${o.out}\n`,
        );
    });
  return teacher;
}
