import type * as tf from '@tensorflow/tfjs';
import type { SignedManifest } from '../../shared/protocol/schemas.js';
import type { Augment } from '../distill/augment.js';
import { agreement, argmaxRows, evaluateOnnx, measureLatency, scorePredictions } from '../distill/evaluate.js';
import type { TrainResult } from '../distill/trainer.js';
import type { WarmStartResult } from '../distill/warm-start.js';
import { exportToOnnx, quantizeInt8 } from '../export/index.js';
import type { parseArch } from '../models/spec.js';
import type { StoreRegistry } from '../registry/open.js';
import type { ReleaseRow } from '../registry/schema.js';
import { featuresFingerprint } from '../teacher/logit-cache.js';
import type { Teacher } from '../teacher/ort-teacher.js';
import type { CohortOf } from '../shadow/cohort.js';
import { shadowEvaluate, shadowManifestMetrics, shadowRows, shadowSummary } from '../shadow/evaluate.js';
import { recordShadowEval } from '../shadow/store.js';
import { gate } from './gate.js';
import type { chooseLearningRate } from './lr.js';
import { buildReleaseManifest } from './manifest.js';
import type { MixStats } from './mix.js';
import type { RoundRecipe } from './recipe.js';
import { allocateReleaseSeq, insertRelease, recordedHoldoutAccuracy, type NewRelease } from './releases.js';
import { selfTestTolerance, type RoundModel } from './settings.js';
import { readArtifact, storeArtifact } from './store.js';
import { saveReleaseWeights } from './warm-weights.js';
import { newestHard, type BaseData, type HardExamples } from './transfer-set.js';
import type { ArtifactBlobs } from '../artifacts/types.js';
import type { LineOutcome, ManifestSigner, RoundJob, RoundMetrics, RoundProgress } from './types.js';

/**
 * Steps 3–7 of a round for one trained student of one release line (issue 13): export, evaluate on the
 * fixed holdout and the line's recent traffic, gate against the line's parent, store, sign, insert. The
 * base line and every cohort line go through here, so a cohort student is judged and shipped exactly
 * like the base one.
 */

/** Everything of a round the lines share. */
export interface RoundContext {
  job: RoundJob;
  registry: StoreRegistry;
  signer: ManifestSigner;
  /** Allocates the sequence of a line (null = base); the worker asks the parent, once per line. */
  allocateSeq?: (cohort: string | null) => number | Promise<number>;
  progress: (p: Omit<RoundProgress, 'at'>) => void;
  now?: () => Date;
  model: RoundModel;
  arch: ReturnType<typeof parseArch>;
  inputSize: number;
  classes: number;
  teacher: Teacher;
  holdout: BaseData['holdout'];
  tHold: { logits: Float32Array };
  backendName: string;
  /** The teacher's own image form, when it has one (issue 11). */
  teacherImage?: RoundModel['teacher']['image'];
  /** Which cohort each device is judged in by the shadow evaluation (issue 13; cohorts.ts cohortLookup). */
  cohortOf?: CohortOf;
  /** Where release artifacts are stored and read: the registry on PostgreSQL; undefined = files under job.dataDir. */
  blobs?: ArtifactBlobs;
  /** Inserts the release row (step 7); default insertRelease. The worker's is fenced on its job's epoch. */
  storeRelease?: (row: NewRelease) => Promise<void>;
}

/** What one line's student was trained with. */
export interface TrainedLine {
  /** null: the base line. */
  cohort: string | null;
  /** The cohort's devices (for the metrics). */
  members?: readonly string[];
  /** The release gated against and named as the manifest's parent (base: the base line's current; cohort: the base release). */
  parent: ReleaseRow | undefined;
  /** Whose weights the student started from. */
  warmFrom: ReleaseRow | undefined;
  warm: WarmStartResult;
  hard: HardExamples;
  mix: MixStats;
  tr: TrainResult;
  recipe: RoundRecipe;
  lr: Awaited<ReturnType<typeof chooseLearningRate>>;
  /** Cohort lines: the augmentation it trained with, labelled by the teacher (cloud/distill/augment.ts). */
  augment?: Augment;
}

export async function shipStudent(ctx: RoundContext, student: tf.LayersModel, line: TrainedLine): Promise<LineOutcome> {
  const { job, registry, signer, model, arch, inputSize, classes, teacher, holdout, tHold, backendName, progress } = ctx;
  const deps = { allocateSeq: ctx.allocateSeq, now: ctx.now };
  const s = model.settings;
  const { parent, warm, hard, mix, tr, recipe, lr } = line;
  const lineName = line.cohort === null ? 'base' : `cohort ${line.cohort}`;
  // Steps 5 and 3: export first, because what is evaluated and gated is the artifact that would ship.
  progress({ phase: 'export', detail: `${lineName}: ONNX fp32 + int8` });
  const fp32 = exportToOnnx(student, { docString: `Apprentice student ${arch.text} for ${model.name}${line.cohort !== null ? ` cohort ${line.cohort}` : ''}, distilled from teacher ${teacher.id}`, metadata: { model: model.name, round: job.roundId, teacher: teacher.id, ...(line.cohort !== null ? { cohort: line.cohort } : {}) } });
  const int8 = quantizeInt8(fp32);
  const artifact = s.artifact === 'int8' ? int8 : fp32;

  progress({ phase: 'evaluate', detail: `${lineName}: holdout ${holdout.count}, recent hard examples ${Math.min(hard.count, s.hardEvalCount)}` });
  const evalArtifact = await evaluateOnnx(artifact, holdout.features, inputSize, holdout.labels);
  const evalOther = await evaluateOnnx(s.artifact === 'int8' ? fp32 : int8, holdout.features, inputSize, holdout.labels);
  const teacherPred = argmaxRows(tHold.logits, classes);
  const recent = newestHard(hard, s.hardEvalCount, inputSize, classes, s.maxDeviceShare);
  const recentTeacherPred = argmaxRows(recent.teacherLogits, classes);
  const hardAgreement = recent.count ? agreement((await evaluateOnnx(artifact, recent.features, inputSize)).predictions, recentTeacherPred) : undefined;
  const parentEval = parent ? await evaluateParent(job.dataDir, ctx.blobs, parent, holdout.features, holdout.labels, recent, recentTeacherPred, inputSize) : undefined;
  // Shadow evaluation on each device's audit traffic (issue 13), recorded for rejected candidates too. The
  // base line on every device; a cohort line on its members, each against the release it runs (the
  // cohort's pooled figures below the minimum), recorded under the line so its rollout finds them.
  progress({ phase: 'evaluate', detail: `${lineName}: shadow evaluation on the newest ${s.shadowAuditPerDevice} audit examples per device` });
  const shadow = await shadowEvaluate({
    registry, dataDir: job.dataDir, blobs: ctx.blobs, model: model.name, teacher, candidate: artifact, inputSize, classes,
    studentImage: model.inputSpec.image, teacherImage: ctx.teacherImage, perDevice: s.shadowAuditPerDevice, minSamples: s.shadowMinSamples,
    ...(line.cohort === null ? { cohortOf: ctx.cohortOf } : { cohortOf: () => line.cohort, devices: line.members ?? [] }),
  });
  await recordShadowEval(registry, job.roundId, model.name, shadowRows(shadow), line.cohort);
  const sample = holdout.features.slice(0, inputSize);
  const latency = await measureLatency(artifact, sample, { budgetMs: s.latencyBudgetMs, warmup: 5 });
  // The device runs batch 1, and dynamic int8 quantisation depends on the batch: compute the golden output the same way.
  const expected = (await evaluateOnnx(artifact, sample, inputSize)).logits;

  const holdoutFingerprint = featuresFingerprint(holdout.features);
  const parentRecordedSameHoldout = parent && (parent.metrics as RoundMetrics | null)?.holdoutFingerprint === holdoutFingerprint;
  // The recorded number is only comparable on the same holdout; if the holdout changed, re-score the parent's artifact.
  const parentAccuracy = parent ? (parentRecordedSameHoldout ? recordedHoldoutAccuracy(parent) : undefined) ?? parentEval?.holdoutAccuracy : undefined;
  const metrics: RoundMetrics = {
    holdoutAccuracy: evalArtifact.accuracy,
    holdoutErrors: evalArtifact.errors,
    holdoutCount: holdout.count,
    holdoutAgreement: agreement(evalArtifact.predictions, teacherPred),
    fp32HoldoutAccuracy: s.artifact === 'int8' ? evalOther.accuracy : evalArtifact.accuracy,
    int8HoldoutAccuracy: s.artifact === 'int8' ? evalArtifact.accuracy : evalOther.accuracy,
    teacherHoldoutAccuracy: scorePredictions(teacherPred, holdout.labels).accuracy,
    hardAgreement,
    hardEvalCount: recent.count,
    parentHardAgreement: parentEval?.hardAgreement,
    parentHoldoutAccuracy: parentAccuracy,
    latencyP50Ms: latency.p50Ms,
    latencyP95Ms: latency.p95Ms,
    latencyMeanMs: latency.meanMs,
    bytes: artifact.byteLength,
    fp32Bytes: fp32.byteLength,
    int8Bytes: int8.byteLength,
    params: student.countParams(),
    epochs: tr.epochs,
    trainSeconds: tr.seconds,
    samplesPerSec: tr.samplesPerSec,
    finalLoss: tr.finalLoss,
    learningRate: recipe.learningRate,
    recipe,
    ...(lr.tuning ? { lrTuning: lr.tuning } : {}),
    ...(lr.note ? { lrNote: lr.note } : {}),
    ...(line.augment ? { augment: line.augment } : {}),
    ...mix,
    hardSkipped: hard.skipped,
    hardLogitsComputed: hard.computed,
    hardQuarantined: hard.quarantined,
    // Teacher of its own image form: hard examples it saw from their source images, and those left out without one.
    ...(hard.fromSource || hard.noSource ? { hardFromSource: hard.fromSource, hardNoSource: hard.noSource } : {}),
    warmStarted: warm.loaded ? 1 : 0,
    warmStart: warm.loaded ? { fromSeq: line.warmFrom!.seq, loaded: true } : { fromSeq: line.warmFrom?.seq ?? null, loaded: false, reason: `trained from scratch: ${warm.reason}` },
    backend: backendName,
    teacherId: teacher.id,
    arch: arch.text,
    quantization: s.artifact,
    holdoutFingerprint,
    parentSeq: parent?.seq ?? null,
    ...(line.cohort !== null ? { cohort: line.cohort, cohortDevices: line.members?.length ?? 0 } : {}),
    // Per-cohort aggregates are numbers, so they go into the signed manifest's metrics.
    shadow: shadowSummary(shadow),
    ...shadowManifestMetrics(shadow),
  };

  progress({ phase: 'gate', detail: lineName });
  const decision = gate({ holdoutAccuracy: evalArtifact.accuracy ?? NaN, parentHoldoutAccuracy: parentAccuracy, parentSeq: parent?.seq, tolerance: s.tolerance, minHoldoutAccuracy: s.minHoldoutAccuracy });
  metrics.gate = decision;
  if (!decision.pass) return { state: 'rejected', cohort: line.cohort, reason: decision.reason, exampleCount: hard.count, metrics };

  // Step 6: the artifact is stored first (content-addressed: the parent signs only a manifest that
  // describes a file it can read), then the round's sequence, then the manifest, signed by the parent.
  progress({ phase: 'store' });
  const stored = await storeArtifact(job.dataDir, artifact, ctx.blobs);
  progress({ phase: 'sign' });
  const seq = await (deps.allocateSeq ?? (() => allocateReleaseSeq(registry)))(line.cohort);
  const manifest = buildReleaseManifest({
    model: model.name,
    seq,
    parentSeq: parent?.seq ?? null,
    inputSpec: model.inputSpec,
    labels: model.labels,
    teacherId: teacher.id,
    artifact,
    quantization: s.artifact,
    chunkSize: s.chunkSize,
    publicBaseUrl: job.publicBaseUrl,
    metrics,
    exampleCount: hard.count,
    roundId: job.roundId,
    cohort: line.cohort,
    createdAt: (deps.now ?? (() => new Date()))(),
    validityDays: s.validityDays,
    selfTest: { input: sample, expected, tolerance: selfTestTolerance(s) },
  });
  const signed: SignedManifest = await signer.sign(manifest);

  // Step 7: content-addressed files first, the registry row last (a row never points at a missing file).
  const other = await storeArtifact(job.dataDir, s.artifact === 'int8' ? fp32 : int8, ctx.blobs);
  await saveReleaseWeights({ dataDir: job.dataDir, registry, blobs: ctx.blobs }, stored.sha256, student, arch.text);
  metrics[s.artifact === 'int8' ? 'fp32Sha256' : 'int8Sha256'] = other.sha256;
  await (ctx.storeRelease ?? ((row: NewRelease) => insertRelease(registry, row)))({
    model: model.name,
    seq,
    sha256: stored.sha256,
    bytes: artifact.byteLength,
    quantization: s.artifact,
    metrics,
    manifest: signed.manifest,
    signature: signed.signature,
    parentSeq: parent?.seq ?? null,
    cohort: line.cohort,
    roundId: job.roundId,
    artifactPath: stored.relPath,
    chunksPublished: false,
  });
  return { state: 'released', cohort: line.cohort, releaseSeq: seq, sha256: stored.sha256, artifactPath: stored.relPath, chunkSize: s.chunkSize, exampleCount: hard.count, metrics };
}

/** The current release's artifact on today's holdout and recent traffic, for comparison (skipped if its file is gone). */
async function evaluateParent(
  dataDir: string,
  blobs: ArtifactBlobs | undefined,
  parent: ReleaseRow,
  features: Float32Array,
  labels: Int32Array,
  recent: { features: Float32Array; count: number },
  recentTeacherPred: Int32Array,
  inputSize: number,
): Promise<{ holdoutAccuracy?: number; hardAgreement?: number } | undefined> {
  let bytes: Uint8Array;
  try {
    bytes = await readArtifact(dataDir, parent.artifactPath, parent.sha256, blobs);
  } catch {
    return undefined;
  }
  const h = await evaluateOnnx(bytes, features, inputSize, labels);
  const r = recent.count ? agreement((await evaluateOnnx(bytes, recent.features, inputSize)).predictions, recentTeacherPred) : undefined;
  return { holdoutAccuracy: h.accuracy, hardAgreement: r };
}
