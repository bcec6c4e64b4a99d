import { Command, Option } from 'commander';
import { epochBars } from '../../shared/cli/epoch-bars.js';
import { parseNonNegativeInt, parseNumber, parsePositiveInt } from '../../shared/cli/errors.js';
import { parseArch } from '../models/spec.js';
import { parseRecipes } from './recipe.js';
import { BACKEND_CHOICES, type BackendChoice } from '../tf/choices.js';
import type { DistillReport } from './pipeline.js';

const pct = (x: number) => `${(100 * x).toFixed(2)}%`;

export function summarizeDistill(r: DistillReport): string {
  const lines = [
    `backend ${r.backend.name}${r.backend.wasmMatMulOverride ? ' (wasm matMul override)' : ''}`,
    `teacher   test errors ${r.teacher.test.errors}/${r.teacher.test.count} (${pct(r.teacher.test.accuracy)})  latency p50 ${r.teacher.latency.p50Ms.toFixed(3)} ms`,
    `student   ${r.student.arch}: test errors ${r.student.test.errors}/${r.student.test.count} (${pct(r.student.test.accuracy)}), agreement with teacher ${pct(r.student.agreementWithTeacher)}, ${r.student.params} params`,
    `          fp32 ${r.student.bytes.fp32} B, p50 ${r.student.latency.fp32.p50Ms.toFixed(4)} ms | int8 ${r.student.bytes.int8} B, p50 ${r.student.latency.int8.p50Ms.toFixed(4)} ms, errors ${r.student.int8Test.errors}, top-1 agreement with fp32 ${pct(r.student.int8AgreementWithFp32)}`,
    `          ${r.speedupVsTeacher.toFixed(1)}× faster than the teacher; trained at ${Math.round(r.student.training.samplesPerSec)} samples/s, lr ${r.student.training.learningRate}`,
    `recipe    ${r.settings.recipe}: T=${r.settings.temperature} alpha=${r.settings.alpha}${r.student.training.search ? ` chosen from ${r.student.training.search.trials.length} trials on ${r.student.training.search.validationCount} validation examples (${r.student.training.search.skipped.length} skipped by the time budget)` : ''}`,
  ];
  if (r.baseline) lines.push(`baseline  labels only: test errors ${r.baseline.test.errors}, lr ${r.baseline.training.learningRate}; gap closed by distillation ${r.gapClosed === undefined ? 'n/a' : pct(r.gapClosed)}`);
  return lines.join('\n');
}

export function distillCommand(): Command {
  return new Command('distill')
    .description('Distil a student from an ONNX teacher; writes student.onnx, student.int8.onnx and report.json to --out')
    .requiredOption('--teacher <file...>', 'teacher ONNX file(s); several form an ensemble (logits averaged)')
    .addOption(new Option('--teacher-output <kind>', 'what the teacher outputs').choices(['logits', 'probs']).default('logits'))
    .requiredOption('--data <spec>', 'transfer set, e.g. mnist:train, idx:IMG,LBL, csv:FILE, unlabeled:SPEC')
    .requiredOption('--test <spec>', 'labelled test set, e.g. mnist:test')
    .requiredOption('--student <arch>', 'student architecture: linear, mlp:H1,H2,..., cnn:F1,F2,...[/H] or dscnn:F1,F2,...[/H]')
    .addOption(new Option('--recipe <mode>', "search: choose T and alpha on a 10% validation split of --data (needs labels); fixed: use --temperature/--alpha. Default: search with labels, fixed without").choices(['search', 'fixed']))
    .option('--recipes <list>', 'search candidates as T:alpha pairs (default 1:0,2.5:0.5,4:0.5,4:0.9,2.5:0.9,20:0.9; alpha 0 = labels only)')
    .option('--search-epochs <n>', 'epochs per search trial (default min(--epochs, 3))')
    .option('--search-minutes <m>', 'time budget of the recipe search; trials not started by then are skipped and recorded', '10')
    .option('--patience <n>', 'search mode: stop after N epochs without a validation gain (best epoch kept)', '3')
    .option('--function-matching', 'teacher logits computed on the fly by onnxruntime on the same augmented view as the student (use with --jitter)', false)
    .option('--temperature <T>', 'softmax temperature (fixed recipe)', '20')
    .option('--alpha <a>', 'weight of the soft (teacher) term, 0..1 (fixed recipe)', '0.9')
    .option('--epochs <n>', 'training epochs', '10')
    .option('--batch-size <n>', 'minibatch size', '128')
    .option('--lr <rate|auto>', "learning rate, or 'auto' to tune on a 10% holdout of --data", 'auto')
    .option('--baseline', 'also train the same student from labels only, same budget and tuning, for comparison', false)
    .option('--limit <n>', 'use only the first N training examples (after the seeded shuffle)')
    .option('--jitter <px>', 'random translation of up to N pixels during training', '0')
    .option('--seed <n>', 'random seed', '1')
    .requiredOption('--out <dir>', 'output directory')
    .option('--cache-dir <dir>', 'where teacher logits are cached', '.cache/teacher-logits')
    .addOption(new Option('--backend <name>', 'tfjs backend').choices([...BACKEND_CHOICES]).default('auto'))
    .option('--json', 'print the report as JSON on stdout instead of a summary', false)
    .addHelpText('after', '\nExample:\n  apprentice distill --teacher teacher.onnx --data mnist:train --test mnist:test --student cnn:16,32 --epochs 10 --baseline --out out/')
    .action(async (o) => {
      parseArch(o.student, '--student');
      const lr = o.lr === 'auto' ? 'auto' : parseNumber('--lr', o.lr, { min: 1e-7, max: 10 });
      const alpha = parseNumber('--alpha', o.alpha, { min: 0, max: 1 });
      const temperature = parseNumber('--temperature', o.temperature, { min: 0.01, max: 1000 });
      const bars = epochBars(!o.json);
      if (!o.json && !o.baseline && lr === 'auto') process.stderr.write('note: --lr auto tunes the rate on a holdout before training\n');
      // Loaded on use: tfjs and onnxruntime are heavy and other commands (the edge daemon) must not pay for them.
      const { runDistill } = await import('./pipeline.js');
      const { report, files } = await runDistill({
        teacher: o.teacher,
        teacherOutput: o.teacherOutput,
        data: o.data,
        test: o.test,
        limit: o.limit === undefined ? undefined : parsePositiveInt('--limit', o.limit),
        student: o.student,
        temperature,
        alpha,
        epochs: parsePositiveInt('--epochs', o.epochs),
        batchSize: parsePositiveInt('--batch-size', o.batchSize),
        learningRate: lr,
        baseline: o.baseline,
        recipe: o.recipe,
        recipes: o.recipes === undefined ? undefined : parseRecipes(o.recipes),
        searchEpochs: o.searchEpochs === undefined ? undefined : parsePositiveInt('--search-epochs', o.searchEpochs),
        searchMinutes: parseNumber('--search-minutes', o.searchMinutes, { min: 0, max: 10_000 }),
        patience: parsePositiveInt('--patience', o.patience),
        functionMatching: o.functionMatching,
        seed: parseNonNegativeInt('--seed', o.seed),
        jitter: parseNonNegativeInt('--jitter', o.jitter),
        outDir: o.out,
        cacheDir: o.cacheDir,
        backend: o.backend as BackendChoice,
        events: bars,
      });
      bars.stop();
      if (o.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
      else process.stdout.write(`${summarizeDistill(report)}\nwrote ${files.student}, ${files.studentInt8}, ${files.report}\n`);
    });
}

