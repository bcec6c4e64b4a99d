import { Command } from 'commander';
import { parsePositiveInt, parseNonNegativeInt } from '../cli/errors.js';
import { exampleSize, loadDataset } from './index.js';

export function dataCommand(): Command {
  const data = new Command('data').description('Inspect datasets');
  data
    .command('inspect')
    .description('Load a dataset spec and print its shape, labels and scaling (validates the files)')
    .argument('<spec>', 'mnist:train | mnist:test | idx:IMAGES[,LABELS] | csv:FILE | unlabeled:SPEC')
    .option('--limit <n>', 'first N examples after shuffling')
    .option('--seed <n>', 'shuffle seed')
    .option('--json', 'print JSON', false)
    .addHelpText('after', '\nExample:\n  apprentice data inspect mnist:test')
    .action(async (spec: string, o) => {
      const ds = await loadDataset(spec, {
        limit: o.limit === undefined ? undefined : parsePositiveInt('--limit', o.limit),
        shuffleSeed: o.seed === undefined ? undefined : parseNonNegativeInt('--seed', o.seed),
      });
      const counts: Record<string, number> = {};
      if (ds.labels) for (const l of ds.labels) counts[String(l)] = (counts[String(l)] ?? 0) + 1;
      let min = Infinity;
      let max = -Infinity;
      for (const v of ds.features) {
        if (v < min) min = v;
        if (v > max) max = v;
      }
      const info = { source: ds.source, count: ds.count, shape: ds.shape, exampleSize: exampleSize(ds), labelled: !!ds.labels, numClasses: ds.numClasses ?? null, labelCounts: ds.labels ? counts : null, scaling: ds.scaling, range: ds.count ? [min, max] : null };
      process.stdout.write(o.json ? JSON.stringify(info, null, 2) + '\n' : Object.entries(info).map(([k, v]) => `${k.padEnd(12)} ${JSON.stringify(v)}`).join('\n') + '\n');
    });
  return data;
}
