/**
 * Issue 13 item 5: the demo with one cohort per device (`npm start -- --cohorts --rounds 3`), once per
 * seed. Per device, on its evaluation pool (≥ 1,000 never-sent images): the share of the round-0 gap
 * (teacher − the shared round-0 student) the cohort student closes by round 3, and whether it beats the
 * shared student of round 3 on that device. Target (mean of the seeds): ≥ 90% closed, and beats shared.
 *
 * Writes test/bench/results/cohorts.json after every seed (a stopped bench keeps what it measured) and
 * prints a one-line summary. `npm run bench:cohorts` (builds first; the edge daemons run from dist/).
 * Options: BENCH_SEEDS (default 1,2,3), BENCH_ROUNDS (default 3), BENCH_EVAL_POOL (default 1000), the cohort
 * students' BENCH_COHORT_EPOCHS, BENCH_COHORT_SHARE, BENCH_COHORT_BASE_LIMIT, BENCH_COHORT_JITTER (default the
 * demo's),
 * BENCH_RESULT_NAME (default cohorts). The seeds run one after the other in this process (one cloud per
 * process: two in-process clouds collide). To run them side by side, start one process per seed with
 * its own BENCH_SEEDS and BENCH_RESULT_NAME once the teacher is cached, then
 * `BENCH_MERGE=cohorts-s1,cohorts-s2,cohorts-s3` aggregates their runs into cohorts.json.
 */
import { readFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { SHIFT_NAMES } from '../../cloud/demo/shifts.js';
import { DEMO_DEFAULTS, demoCohortLines, prepareTeacher, runDemo, type DemoOptions, type DemoSummary } from '../../cloud/demo/run.js';
import { writeBenchResult } from './common.js';

const seeds = (process.env.BENCH_SEEDS ?? '1,2,3').split(',').map(Number);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const evalPool = Number(process.env.BENCH_EVAL_POOL ?? DEMO_DEFAULTS.evalPool);
const resultName = process.env.BENCH_RESULT_NAME ?? 'cohorts';
/** Settings for every cohort line (default: the demo's per-line DEMO_COHORT_LINES). */
const envNumber = (name: string) => (process.env[name] ? Number(process.env[name]) : undefined);
const cohortOpts = {
  cohortEpochs: envNumber('BENCH_COHORT_EPOCHS'),
  cohortHardExampleShare: envNumber('BENCH_COHORT_SHARE'),
  cohortBaseLimit: envNumber('BENCH_COHORT_BASE_LIMIT'),
  cohortJitter: envNumber('BENCH_COHORT_JITTER'),
  // Per-line settings over the demo's, as JSON: {"rotation":{"augment":{"rotate":30}}}.
  cohortLineOverrides: process.env.BENCH_COHORT_LINES ? (JSON.parse(process.env.BENCH_COHORT_LINES) as DemoOptions['cohortLineOverrides']) : undefined,
};
const cohortLines = demoCohortLines(cohortOpts, SHIFT_NAMES.slice(0, DEMO_DEFAULTS.devices));
const merge = process.env.BENCH_MERGE?.split(',').filter(Boolean);
const TARGET_CLOSED = 0.9;

interface SeedRun {
  seed: number;
  seconds: number;
  stoppedBy: DemoSummary['stoppedBy'];
  rounds: number;
  devices: { id: string; evaluated: number; teacher: number; round0Shared: number; cohort: number; shared: number; cohortRelease: number | null; closed: number; sharedClosed: number | null; beatsShared: boolean | null }[];
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

function perSeed(seed: number, s: DemoSummary): SeedRun {
  const first = s.rows[0];
  const last = s.rows[s.rows.length - 1];
  return {
    seed,
    seconds: s.seconds,
    stoppedBy: s.stoppedBy,
    rounds: last?.round ?? -1,
    devices: s.gaps.map((g) => {
      const f = first!.devices.find((d) => d.id === g.id)!;
      const l = last!.devices.find((d) => d.id === g.id)!;
      return {
        id: g.id,
        evaluated: l.evaluated,
        teacher: l.teacherAccuracy,
        round0Shared: f.sharedAccuracy ?? f.studentAccuracy,
        cohort: l.studentAccuracy,
        shared: l.sharedAccuracy ?? NaN,
        cohortRelease: l.release ?? null,
        closed: g.closed,
        sharedClosed: g.sharedClosed ?? null,
        beatsShared: g.beatsShared ?? null,
      };
    }),
  };
}

/** Per device over the seeds: mean accuracies, mean share closed, and the target. */
function aggregate(runs: SeedRun[]) {
  const ids = runs[0]?.devices.map((d) => d.id) ?? [];
  return ids.map((id) => {
    const ds = runs.map((r) => r.devices.find((d) => d.id === id)!);
    const cohort = mean(ds.map((d) => d.cohort));
    const shared = mean(ds.map((d) => d.shared));
    const teacher = mean(ds.map((d) => d.teacher));
    const round0Shared = mean(ds.map((d) => d.round0Shared));
    // Of the mean gaps (mean of 3 seeds), not a mean of ratios: a seed with a tiny gap does not dominate.
    const gap0 = teacher - round0Shared;
    const closed = gap0 > 0 ? (gap0 - (teacher - cohort)) / gap0 : NaN;
    const sharedClosed = gap0 > 0 ? (gap0 - (teacher - shared)) / gap0 : NaN;
    return {
      id,
      seeds: ds.length,
      evaluatedPerSeed: ds.map((d) => d.evaluated),
      teacher,
      round0Shared,
      cohort,
      shared,
      closed,
      sharedClosed,
      closedPerSeed: ds.map((d) => d.closed),
      beatsShared: cohort > shared,
      meetsTarget: closed >= TARGET_CLOSED && cohort > shared,
    };
  });
}

async function main(): Promise<void> {
  const t0 = Date.now();
  const loadStart = loadavg();
  const runs: SeedRun[] = [];
  const parts: Record<string, unknown>[] = [];
  let mergedSettings: Record<string, unknown> | undefined;
  const write = () => {
    const perDevice = aggregate(runs);
    return {
      file: writeBenchResult(merge ? (process.env.BENCH_RESULT_NAME ?? 'cohorts') : resultName, {
        loadedMachine: true,
        loadavgStart: loadStart,
        loadavgEnd: loadavg(),
        seconds: (Date.now() - t0) / 1000,
        ...(merge ? { mergedFrom: parts } : {}),
        // Merged: the settings the parts ran with (the first part's; each part keeps its own), not this build's.
        settings: { ...(mergedSettings ?? { ...DEMO_DEFAULTS, rounds, evalPool, cohorts: true, cohortLines }), seeds: runs.map((r) => r.seed) },
        target: { closedOfRound0Gap: TARGET_CLOSED, beatsShared: true, meanOfSeeds: seeds.length },
        complete: runs.length === seeds.length && runs.every((r) => r.stoppedBy === 'rounds' && r.rounds === rounds),
        perDevice,
        runs,
      }),
      perDevice,
    };
  };
  const optsOf = (seed: number): DemoOptions => ({
    ...DEMO_DEFAULTS,
    dataDir: join(tmpdir(), `apprentice-cohorts-bench-${process.pid}-${seed}`),
    fresh: true,
    rounds,
    evalPool,
    cohorts: true,
    seed,
    ...cohortOpts,
    hardExampleShare: DEMO_DEFAULTS.hardExampleShare,
    out: (line) => process.stderr.write(`  [seed ${seed}] ${line}\n`),
    progress: false,
  });
  if (merge) {
    for (const name of merge) {
      const part = JSON.parse(readFileSync(resolve('test/bench/results', `${name}.json`), 'utf8')) as { runs: SeedRun[]; loadavgStart: number[]; loadavgEnd: number[]; seconds: number; at: string; settings: Record<string, unknown> };
      mergedSettings ??= part.settings;
      if (JSON.stringify({ ...part.settings, seeds: null }) !== JSON.stringify({ ...mergedSettings, seeds: null })) throw new Error(`BENCH_MERGE: ${name} ran with other settings than ${merge[0]}`);
      runs.push(...part.runs);
      parts.push({ name, at: part.at, seconds: part.seconds, loadavgStart: part.loadavgStart, loadavgEnd: part.loadavgEnd });
    }
    runs.sort((a, b) => a.seed - b.seed);
    return report(write().file);
  }
  // The reference teacher once (cached).
  const teacher = await prepareTeacher(optsOf(seeds[0]!), (m) => process.stderr.write(`· ${m}\n`));
  const one = async (seed: number) => {
    process.stderr.write(`· seed ${seed}: demo --cohorts --rounds ${rounds} (load ${loadavg()[0]!.toFixed(1)})\n`);
    const summary = await runDemo({ ...optsOf(seed), teacher: teacher.file });
    runs.push(perSeed(seed, summary));
    runs.sort((a, b) => a.seed - b.seed);
    write();
  };
  for (const seed of seeds) await one(seed);
  report(write().file);

  function report(file: string): void {
    const pct = (x: number) => (x * 100).toFixed(1);
    const lines = aggregate(runs).map((d) => `${d.id.replace(/^demo-\d-/, '')} cohort ${pct(d.closed)}% closed vs shared ${pct(d.sharedClosed)}% (${d.meetsTarget ? 'target met' : 'target missed'})`);
    const loads = merge ? parts.map((p) => (p.loadavgStart as number[])[0]!) : [loadStart[0]!];
    const load = loads.map((x) => x.toFixed(1)).join('/');
    console.log(`cohorts (mean of ${runs.length} seeds, round ${rounds}, ${evalPool} eval images/device, cohort lines ${JSON.stringify(mergedSettings?.cohortLines ?? cohortLines)}, load ${load}): ${lines.join('; ')} → ${file}`);
  }
}

main().then(
  () => setTimeout(() => process.exit(0), 1000).unref(),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
