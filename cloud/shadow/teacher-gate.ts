import { eq, inArray } from 'drizzle-orm';
import { Counter, type Registry as PromRegistry } from 'prom-client';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import type { ImageSpec } from '../../shared/protocol/schemas.js';
import { argmaxRows, evaluateOnnx } from '../distill/evaluate.js';
import type { StoreRegistry } from '../registry/open.js';
import type { ShadowDeviceRow, ShadowRunRow } from '../registry/schema.js';
import { releaseBySeq } from '../rounds/releases.js';
import { parseRoundModel } from '../rounds/settings.js';
import { readArtifact } from '../rounds/store.js';
import type { ArtifactBlobs } from '../artifacts/types.js';
import { teacherLabelRows } from '../rounds/transfer-set.js';
import { Teacher } from '../teacher/ort-teacher.js';
import { shadowRunInterval } from './stats.js';
import { selectDisagreementRows, type NewShadowEval } from './store.js';
import type { DeviceVerdict, ShadowSwitchDecision, ShadowSwitchGate } from './switch-gate.js';

/**
 * The teacher-labelled switch gate of an on-device shadow run (issue 13 items 3 and 4). The devices of
 * the run send a sample of the requests where the candidate and their running model disagreed, as
 * `shadow_disagreement` hard examples. At the window's end this gate has the teacher label them (the
 * logits already stored on a row by a round are reused; new ones are stored for the rounds to reuse),
 * scores the candidate and each device's running release on them with ORT, and computes per device the
 * paired difference of (candidate − running) accuracy over all its shadowed requests, agreements as ties,
 * with the paired 95% interval of stats.ts (`shadowRunInterval`: the choice is documented there).
 *
 * A device whose upper bound is below −margin (the switch rollout's `agreementMargin`) is held back:
 * the decision carries each device's figures as shadow rows (`evidence`), which the service records for
 * the re-issued release, so the switch rollout's agreement gate (cloud/rollouts/agreement.ts) moves it to
 * `held_back` with the figures while the others switch. The run does not switch at all when every device
 * with evidence is held back. A device with fewer than the run's `minRequests` shadowed requests, or with
 * disagreements of which too few reached the cloud and the teacher, has no evidence and decides nothing.
 */

/** What labelling a model's examples needs: its teacher (disposed by the gate) and the input forms. */
export interface ModelTeacher {
  teacher: Pick<Teacher, 'id' | 'logits' | 'dispose'>;
  inputSize: number;
  classes: number;
  studentImage?: ImageSpec;
  teacherImage?: ImageSpec;
}

export interface TeacherGateDeps {
  registry: StoreRegistry;
  dataDir: string;
  /** The artifact store when it is the registry (PostgreSQL); undefined = files under dataDir. */
  blobs?: ArtifactBlobs;
  /** The model's teacher; default {@link modelTeacher} (the one its rounds use). */
  teacherOf?: (model: string) => Promise<ModelTeacher>;
  log?: Logger;
  /** Disagreements read per device, newest first (a bound on the teacher's work); default 500. */
  perDevice?: number;
  /** Fewer labelled disagreements than min(this, D) is no evidence; default 10. */
  minLabelled?: number;
  /** The cloud's metrics: `apprentice_cloud_shadow_teacher_gate_total{result}` counts refused switches and failed gates. */
  metrics?: PromRegistry;
}

const METRIC = 'apprentice_cloud_shadow_teacher_gate_total';

function gateCounter(reg: PromRegistry | undefined): Counter<'result'> {
  return (
    (reg?.getSingleMetric(METRIC) as Counter<'result'> | undefined) ??
    new Counter({ name: METRIC, help: "Shadow runs' teacher-labelled switch gate decisions that stop a switch, by result: refused (candidate worse on every device with evidence), failed (the disagreements could not be labelled and scored)", labelNames: ['result'] as const, registers: reg ? [reg] : [] })
  );
}

export const DEFAULT_SWITCH_MARGIN = 0.01;

/** The teacher a model's rounds use, opened from its registry row. */
export async function modelTeacher(registry: StoreRegistry, model: string): Promise<ModelTeacher> {
  const { models } = registry.t;
  const [row] = await registry.q.select().from(models).where(eq(models.name, model)).limit(1);
  if (!row) throw new Error(`model ${model} not found`);
  const m = parseRoundModel(row);
  const teacher = await Teacher.create(m.teacher.files, { outputKind: m.teacher.outputKind, intraOpNumThreads: 1 });
  return { teacher, inputSize: m.inputSpec.shape.reduce((a, b) => a * b, 1), classes: m.labels.length, studentImage: m.inputSpec.image, teacherImage: m.teacher.image };
}

/** Per-device counts on the labelled disagreements. */
interface Scored {
  labelled: number;
  better: number;
  worse: number;
}

const pts = (x: number): string => `${x >= 0 ? '+' : '−'}${Math.abs(x * 100).toFixed(1)}`;

/** Decisions by their inputs: the rollout view asks on every read, the teacher and ORT run once per change. */
const CACHE_MAX = 64;

export function teacherSwitchGate(deps: TeacherGateDeps): ShadowSwitchGate {
  const log = deps.log ?? silentLogger;
  const counter = gateCounter(deps.metrics);
  // Both results show at 0 from the start, so a scrape tells "none yet" from "not exported".
  for (const result of ['refused', 'failed'] as const) counter.inc({ result }, 0);
  const perDevice = deps.perDevice ?? 500;
  const minLabelled = deps.minLabelled ?? 10;
  const cache = new Map<string, ShadowSwitchDecision>();

  const gate = async ({ run, devices }: { run: ShadowRunRow; devices: readonly ShadowDeviceRow[] }): Promise<ShadowSwitchDecision> => {
    const margin = marginOf(run.policy);
    const shadowed = devices.filter((d) => d.requests > 0);
    const rows = await selectDisagreementRows(deps.registry, run.model, shadowed.map((d) => d.deviceId), run.createdAt, run.until, perDevice);
    const key = JSON.stringify([run.id, margin, shadowed.map((d) => [d.deviceId, d.requests, d.agreements]), rows.length, rows[0]?.id ?? null]);
    const hit = cache.get(key);
    if (hit) return hit;

    let scored = new Map<string, Scored>();
    try {
      if (rows.length) scored = await score(deps, run, rows);
    } catch (err) {
      // Not cached: the next call tries again. At the window's end the run then ends without a switch.
      counter.inc({ result: 'failed' });
      log.error({ err, run: run.id, release: run.releaseSeq }, 'shadow/teacher-gate-failed');
      return { switch: false, reason: `teacher: the disagreements could not be labelled and scored (${(err as Error).message.split('\n')[0]})`, devices: [] };
    }
    const running = new Map<string, number | null>();
    const ids = devices.map((d) => d.deviceId);
    for (let i = 0; i < ids.length; i += 500) {
      const devicesTable = deps.registry.t.devices;
      for (const d of await deps.registry.q.select({ id: devicesTable.id, runningSeq: devicesTable.runningSeq }).from(devicesTable).where(inArray(devicesTable.id, ids.slice(i, i + 500)))) running.set(d.id, d.runningSeq);
    }

    const verdicts: ShadowSwitchDecision['devices'] = [];
    const evidence: NewShadowEval[] = [];
    for (const d of shadowed) {
      const disagreements = Math.max(0, d.requests - d.agreements);
      const s = scored.get(d.deviceId) ?? { labelled: 0, better: 0, worse: 0 };
      const agreement = d.agreements / d.requests;
      const base = { scope: 'device' as const, deviceId: d.deviceId, cohort: null, runningSeq: running.get(d.deviceId) ?? null, samples: d.requests, candidateAccuracy: null, runningAccuracy: null, agreement };
      const need = Math.min(minLabelled, disagreements);
      if (d.requests < run.minRequests || s.labelled < need) {
        const why = d.requests < run.minRequests ? `${d.requests} shadowed requests < ${run.minRequests}` : `${s.labelled} of ${disagreements} disagreements labelled by the teacher (< ${need})`;
        verdicts.push({ deviceId: d.deviceId, verdict: 'no_evidence', agreement, detail: `teacher: no evidence: ${why}` });
        evidence.push({ ...base, judgedBy: 'none', delta: null, deltaLow: null, deltaHigh: null });
        continue;
      }
      const ci = shadowRunInterval(d.requests, disagreements, s.better, s.worse, s.labelled);
      const hold = ci.high + 1e-12 < -margin;
      const verdict: DeviceVerdict = hold ? 'fail' : 'pass';
      const figures = `${pts(ci.delta)} pts (95% CI ${pts(ci.low)} … ${pts(ci.high)}) over ${d.requests} shadowed requests, ${disagreements} disagreements of which ${s.labelled} labelled: candidate right on ${s.better}, running on ${s.worse}`;
      verdicts.push({ deviceId: d.deviceId, verdict, agreement, detail: `teacher: ${hold ? `held back, upper bound < −${(margin * 100).toFixed(1)}` : 'passed'}: ${figures}` });
      evidence.push({ ...base, judgedBy: 'device', delta: ci.delta, deltaLow: ci.low, deltaHigh: ci.high });
    }
    const held = verdicts.filter((v) => v.verdict === 'fail');
    const passed = verdicts.filter((v) => v.verdict === 'pass');
    let decision: ShadowSwitchDecision;
    if (held.length && !passed.length) {
      counter.inc({ result: 'refused' });
      log.warn({ run: run.id, release: run.releaseSeq, held: held.map((v) => v.deviceId) }, 'shadow/teacher-gate-refused');
      decision = { switch: false, reason: `teacher: candidate worse on the labelled disagreements of every device with evidence (${held.length}; ${held[0]!.deviceId}: ${held[0]!.detail})`, devices: verdicts, evidence };
    } else {
      const which = held.length ? `; held back: ${held.map((v) => v.deviceId).join(', ')}` : '';
      decision = {
        switch: true,
        reason: passed.length ? `teacher: ${passed.length} device(s) pass on their labelled disagreements${which}` : 'teacher: no device has labelled evidence (the agreement gate decides)',
        devices: verdicts,
        evidence,
      };
    }
    if (cache.size >= CACHE_MAX) cache.delete(cache.keys().next().value!);
    cache.set(key, decision);
    return decision;
  };
  return gate;
}

/** The margin of the rollout the switch would start (`agreementMargin` of the run's policy). */
function marginOf(policy: unknown): number {
  const m = (policy as { agreementMargin?: unknown } | null)?.agreementMargin;
  return typeof m === 'number' && m >= 0 && m <= 1 ? m : DEFAULT_SWITCH_MARGIN;
}

/** Teacher labels, then the candidate's and each example's running release's predictions; counts per device. */
async function score(deps: TeacherGateDeps, run: ShadowRunRow, rows: Awaited<ReturnType<typeof selectDisagreementRows>>): Promise<Map<string, Scored>> {
  const t = await (deps.teacherOf ?? ((m) => modelTeacher(deps.registry, m)))(run.model);
  let l: Awaited<ReturnType<typeof teacherLabelRows>>;
  try {
    l = await teacherLabelRows(deps.registry, rows, t.teacher as Teacher, { inputSize: t.inputSize, classes: t.classes, studentImage: t.studentImage, teacherImage: t.teacherImage });
  } finally {
    await t.teacher.dispose();
  }
  const n = l.kept.length;
  const out = new Map<string, Scored>();
  if (!n) return out;
  const features = new Float32Array(n * t.inputSize);
  l.inputs.forEach((x, k) => features.set(x, k * t.inputSize));
  const teacherLogits = new Float32Array(n * t.classes);
  l.logits.forEach((z, k) => teacherLogits.set(z, k * t.classes));
  const teacherPred = argmaxRows(teacherLogits, t.classes);
  const predictions = async (seq: number, idx: readonly number[]): Promise<Int32Array | undefined> => {
    const rel = await releaseBySeq(deps.registry, seq);
    if (!rel) return undefined;
    let bytes: Uint8Array;
    try {
      bytes = await readArtifact(deps.dataDir, rel.artifactPath, rel.sha256, deps.blobs);
    } catch {
      return undefined;
    }
    const x = new Float32Array(idx.length * t.inputSize);
    idx.forEach((k, j) => x.set(features.subarray(k * t.inputSize, (k + 1) * t.inputSize), j * t.inputSize));
    return (await evaluateOnnx(bytes, x, t.inputSize)).predictions;
  };
  const all = Array.from({ length: n }, (_, k) => k);
  const cand = await predictions(run.releaseSeq, all);
  if (!cand) throw new Error(`shadow run ${run.id}: the candidate release ${run.releaseSeq} has no readable artifact`);
  // Each example was answered by the release the device ran then (its release_seq).
  const bySeq = new Map<number, number[]>();
  l.kept.forEach((r, k) => {
    const seq = (r as (typeof rows)[number]).releaseSeq;
    if (seq === null) return;
    bySeq.set(seq, [...(bySeq.get(seq) ?? []), k]);
  });
  for (const [seq, idx] of bySeq) {
    const p = await predictions(seq, idx);
    if (!p) continue; // the running release's file is gone: those examples are not scored
    idx.forEach((k, j) => {
      const deviceId = l.kept[k]!.deviceId;
      const s = out.get(deviceId) ?? { labelled: 0, better: 0, worse: 0 };
      const c = cand[k] === teacherPred[k];
      const r = p[j] === teacherPred[k];
      s.labelled++;
      // Recomputed here they may agree after all (the device's runtime rounds differently): a tie.
      if (c && !r) s.better++;
      else if (r && !c) s.worse++;
      out.set(deviceId, s);
    });
  }
  return out;
}
