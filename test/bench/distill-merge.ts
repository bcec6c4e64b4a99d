/**
 * Merges distill bench results whose seeds ran in separate processes (BENCH_SEED_LIST) into one
 * results file, recomputing the per-student rows, the targets and the summary from the reports.
 *
 *   npx tsx test/bench/distill-merge.ts OUT_NAME part1.json part2.json ...   (--help for this text)
 *
 * The parts must share the teacher (same sha256); a student-seed present twice is refused, and a
 * seed one part left out for its budget counts as measured when another part ran it.
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { DistillReport } from '../../cloud/distill/pipeline.js';
import { writeBenchResult } from './common.js';
import type { NotMeasured } from './distill-plan.js';
import { oneLine, summarize, targets } from './distill-summary.js';

/** The fields of a distill bench result the merge reads. */
export interface DistillResultPart {
  backend: unknown;
  complete: boolean;
  loadedMachine: boolean;
  loadavgBefore: number[];
  loadavgAfter: number[];
  budget: { minutes: number | null; seeds: number[]; plans: unknown[]; augmentation?: unknown; teacherSeconds: number };
  notMeasured: NotMeasured[];
  teacher: { sha256: string; testErrors?: number };
  seconds: number;
  reports: Record<string, DistillReport[]>;
}

export function mergeResults(parts: { name: string; result: DistillResultPart }[]) {
  if (parts.length === 0) throw new Error('distill-merge: no parts given');
  // A part whose seeds were all left out has no teacher test score of its own.
  const teacher = parts.find((p) => p.result.teacher?.testErrors !== undefined)?.result.teacher ?? parts[0]!.result.teacher;
  for (const p of parts) {
    if (p.result.teacher?.sha256 !== teacher.sha256) throw new Error(`distill-merge: ${p.name} used teacher ${p.result.teacher?.sha256?.slice(0, 12)}, not ${teacher.sha256.slice(0, 12)}`);
    if (!p.result.reports || typeof p.result.reports !== 'object') throw new Error(`distill-merge: ${p.name} has no reports`);
  }
  const reports: Record<string, DistillReport[]> = {};
  for (const p of parts) {
    for (const [student, list] of Object.entries(p.result.reports)) {
      for (const r of list) {
        const seed = r.settings.seed;
        if ((reports[student] ?? []).some((x) => x.settings.seed === seed)) throw new Error(`distill-merge: ${student} seed ${seed} appears in more than one part (${p.name})`);
        (reports[student] ??= []).push(r);
      }
    }
  }
  for (const list of Object.values(reports)) list.sort((a, b) => a.settings.seed - b.settings.seed);
  const measured = (n: NotMeasured) => (reports[n.student] ?? []).some((r) => r.settings.seed === n.seed);
  const notMeasured = parts.flatMap((p) => p.result.notMeasured ?? []).filter((n) => !measured(n));
  const rows = Object.entries(reports).map(([student, list]) => summarize(student, list));
  const checked = targets(rows, notMeasured);
  // The parts ran side by side: the wall clock is the longest part.
  const seconds = Math.max(...parts.map((p) => p.result.seconds));
  return {
    summary: oneLine(rows, checked, teacher.testErrors, seconds),
    mergedFrom: parts.map((p) => p.name),
    backend: parts[0]!.result.backend,
    quick: false,
    complete: notMeasured.length === 0,
    loadedMachine: parts.some((p) => p.result.loadedMachine),
    loadavg: parts.map((p) => ({ part: p.name, before: p.result.loadavgBefore, after: p.result.loadavgAfter })),
    budget: parts.map((p) => ({ part: p.name, minutes: p.result.budget.minutes, seeds: p.result.budget.seeds, seconds: p.result.seconds, augmentation: p.result.budget.augmentation, plans: p.result.budget.plans })),
    notMeasured,
    teacher,
    students: rows,
    targets: checked,
    throughput: { fullRuns: rows.map((r) => ({ student: r.student, samplesPerSec: r.training.samplesPerSec, gflops: r.training.gflops })) },
    seconds,
    reports,
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const [out, ...files] = process.argv.slice(2);
  if (!out || out === '--help' || out === '-h' || files.length === 0) {
    console.log('usage: npx tsx test/bench/distill-merge.ts OUT_NAME part1.json part2.json ...\n  merges distill bench results (same teacher, disjoint seeds) into test/bench/results/OUT_NAME.json');
    process.exit(out === '--help' || out === '-h' ? 0 : 2);
  }
  try {
    const parts = files.map((f) => ({ name: basename(f), result: JSON.parse(readFileSync(f, 'utf8')) as DistillResultPart }));
    const merged = mergeResults(parts);
    const file = writeBenchResult(out, merged);
    console.log(`${merged.summary} → ${file}`);
  } catch (e) {
    console.error((e as Error).message);
    process.exit(2);
  }
}
