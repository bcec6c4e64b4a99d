import { Command } from 'commander';
import { z } from 'zod';
import { addApiOptions, apiClientFromFlags } from '../../shared/cli/api-client.js';
import { UsageError } from '../../shared/cli/errors.js';

const listSchema = z.object({
  examples: z.array(
    z.object({ id: z.string(), deviceId: z.string(), model: z.string().nullable(), label: z.number(), teacherClass: z.number().nullable(), teacherProb: z.number().nullable(), labelProb: z.number().nullable(), ingestedAt: z.string() }),
  ),
});
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const pct = (p: number | null): string => (p === null ? '?' : `${(p * 100).toFixed(1)}%`);

/**
 * `apprentice examples quarantine list|accept|drop`: feedback labels the teacher contradicts with high
 * confidence (issue 10). Not trained on until accepted; drop deletes the example.
 */
export function examplesCommand(o: { fetchImpl?: typeof fetch } = {}): Command {
  const client = (f: { cloud: string; token?: string; tokenFile?: string }) => apiClientFromFlags(f, { fetchImpl: o.fetchImpl });
  const q = new Command('quarantine').description('Feedback labels the teacher contradicts (not trained on until accepted)');
  q.addCommand(
    addApiOptions(new Command('list'))
      .description('List quarantined feedback labels, newest first')
      .option('--model <name>', 'only this model')
      .option('--limit <n>', 'at most this many (1..1000)', '100')
      .option('--json', 'print JSON', false)
      .action(async (f: { cloud: string; token?: string; tokenFile?: string; model?: string; limit: string; json: boolean }) => {
        const limit = Number(f.limit);
        if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new UsageError(`--limit: expected an integer 1..1000, got "${f.limit}"`);
        const r = await client(f).request('GET', 'v1/examples/quarantine', { query: { model: f.model, limit }, schema: listSchema });
        if (f.json) return void process.stdout.write(JSON.stringify(r, null, 2) + '\n');
        if (!r.examples.length) return void process.stdout.write('no quarantined labels\n');
        for (const e of r.examples) {
          process.stdout.write(`${e.id}  ${e.deviceId}  ${e.model ?? '-'}  label ${e.label} (teacher ${pct(e.labelProb)}), teacher says ${e.teacherClass ?? '?'} (${pct(e.teacherProb)})  ${e.ingestedAt}\n`);
        }
      }),
  );
  for (const [verb, what] of [
    ['accept', 'Accept a quarantined label: trained on from the next round'],
    ['drop', 'Drop a quarantined example (deleted)'],
  ] as const) {
    q.addCommand(
      addApiOptions(new Command(verb))
        .description(what)
        .argument('<id>', 'example id (from `list`)')
        .action(async (id: string, f: { cloud: string; token?: string; tokenFile?: string }) => {
          if (!UUID_RE.test(id)) throw new UsageError(`<id>: expected an example UUID, got "${id}"`);
          await client(f).request('POST', `v1/examples/quarantine/${id}/${verb}`);
          process.stdout.write(`${verb === 'accept' ? 'accepted' : 'dropped'} ${id}\n`);
        }),
    );
  }
  return new Command('examples').description('Hard examples the fleet sent back').addCommand(q);
}
