import type * as tf from '@tensorflow/tfjs';
import type { SignedManifest } from '../../shared/protocol/schemas.js';
import { agreement, argmaxRows, evaluateOnnx, measureLatency, scorePredictions } from '../distill/evaluate.js';
import { trainModel } from '../distill/trainer.js';
import { loadWeightsInto, saveWeights, type WarmStartResult } from '../distill/warm-start.js';
import { exportToOnnx, quantizeInt8 } from '../export/index.js';
import { buildModel } from '../models/build.js';
import { imageShapeOf, isConv, parseArch } from '../models/spec.js';
import type { Registry } from '../registry/db.js';
import type { ReleaseRow } from '../registry/schema.js';
import { featuresFingerprint } from '../teacher/logit-cache.js';
import { Teacher } from '../teacher/ort-teacher.js';
import { initBackend } from '../tf/backend.js';
import type { CohortOf } from '../shadow/cohort.js';
import { shadowEvaluate, shadowManifestMetrics, shadowRows, shadowSummary } from '../shadow/evaluate.js';
import { recordShadowEval } from '../shadow/store.js';
import { gate } from './gate.js';
import { chooseLearningRate } from './lr.js';
import { chooseRoundRecipe } from './recipe.js';
import { buildReleaseManifest } from './manifest.js';
import { mixTransferSet } from './mix.js';
import { allocateReleaseSeq, currentRelease, insertRelease, recordedHoldoutAccuracy } from './releases.js';
import { parseRoundModel, RoundConfigError, selfTestTolerance } from './settings.js';
import { readArtifact, storeArtifact, teacherCacheDir, weightsBasePath } from './store.js';
import { baseTeacherLogits, loadBaseData, loadHardExamples, newestHard, sameImageSpec } from './transfer-set.js';
import { imageSize } from '../../shared/image/preprocess.js';
import type { ManifestSigner, RoundJob, RoundMetrics, RoundOutcome, RoundProgress } from './types.js';

/** Steps 1–7 of a round (transfer set → train → evaluate → gate → export → sign → store). Runs in the worker process. */
export interface RoundDeps {
  registry: Registry;
  signer: ManifestSigner;
  /** The round's release sequence (the worker asks the parent); default: allocated from the registry here. */
  allocateSeq?: () => number | Promise<number>;
  onProgress?: (p: Omit<RoundProgress, 'at'>) => void;
  now?: () => Date;
  /** Cohort of a device for shadow evaluation (issue 13); default: every device on the base line. */
  cohortOf?: CohortOf;
}

export async function runRound(job: RoundJob, deps: RoundDeps): Promise<RoundOutcome> {
  const startedMs = Date.now();
  const { registry, signer } = deps;
  const progress = (p: Omit<RoundProgress, 'at'>) => deps.onProgress?.(p);
  const model = parseRoundModel(job.model);
  const s = model.settings;
  const classes = model.labels.length;
  const inputSize = model.inputSpec.shape.reduce((a, b) => a * b, 1);
  const arch = parseArch(model.studentSpec, 'studentSpec');
  // Conv students read the image shape from the model's input spec ([H, W, C], or a flat square image).
  const imageShape = isConv(arch) ? imageShapeOf(model.inputSpec.shape, 'studentSpec', model.inputSpec.image) : undefined;

  const backend = await initBackend(job.backend);
  progress({ phase: 'transfer-set', detail: `${s.baseData} (backend ${backend.name})` });
  const { train, holdout } = await loadBaseData(s, inputSize, model.inputSpec.scaling, model.inputSpec.image);
  const teacher = await Teacher.create(model.teacher.files, { outputKind: model.teacher.outputKind, intraOpNumThreads: 1 });
  let student: tf.LayersModel | undefined;
  try {
    progress({ phase: 'teacher', detail: `soft labels for ${train.count} base examples` });
    const cacheDir = teacherCacheDir(job.dataDir);
    // A teacher with its own image form sees the same base images through its own preprocessing (issue 11).
    const teacherImage = model.teacher.image;
    const teacherBase = teacherImage && !sameImageSpec(teacherImage, model.inputSpec.image) ? await loadBaseData(s, imageSize(teacherImage), undefined, teacherImage) : { train, holdout };
    if (teacherBase.train.count !== train.count || teacherBase.holdout.count !== holdout.count) {
      throw new RoundConfigError(`teacher.image: the base data loads as ${teacherBase.train.count}/${teacherBase.holdout.count} examples for the teacher, ${train.count}/${holdout.count} for the student`);
    }
    const tTrain = await baseTeacherLogits(teacher, teacherBase.train, cacheDir);
    if (tTrain.classes !== classes) throw new RoundConfigError(`teacher outputs ${tTrain.classes} classes, model ${model.name} has ${classes} labels`);
    const tHold = await baseTeacherLogits(teacher, teacherBase.holdout, cacheDir);
    const hard = await loadHardExamples(registry, model.name, teacher, {
      inputSize, classes, window: s.hardExampleWindow, maxDeviceShare: s.maxDeviceShare, quarantine: s.labelQuarantine, studentImage: model.inputSpec.image, teacherImage,
    });
    const { set, stats: mix } = mixTransferSet(
      { features: train.features, count: train.count, labels: train.labels, teacherLogits: tTrain.logits },
      { features: hard.features, count: hard.count, labels: hard.labels, teacherLogits: hard.teacherLogits },
      { inputSize, classes, share: s.hardExampleShare, maxRepeat: s.hardExampleMaxRepeat },
    );

    // Step 2: distil, from the current release's weights when the architecture still matches.
    const parent = currentRelease(registry, model.name);
    student = buildModel(arch, { inputSize, classes, imageShape, seed: s.seed });
    const warm: WarmStartResult = !s.warmStart
      ? { loaded: false, reason: 'warm start disabled' }
      : !parent
        ? { loaded: false, reason: 'no current release' }
        : await loadWeightsInto(student, weightsBasePath(job.dataDir, parent.sha256), arch.text);
    if (s.lr === 'auto') progress({ phase: 'train', detail: `lr auto: trying ${s.lrCandidates.join(', ')}` });
    const base = { features: train.features, count: train.count, labels: train.labels, teacherLogits: tTrain.logits };
    const lr = await chooseLearningRate(arch, base, s, { inputSize, classes, imageShape });
    if (s.recipe === 'search') progress({ phase: 'train', detail: `recipe search on a validation split of the base data` });
    const recipe = await chooseRoundRecipe(arch, base, s, { inputSize, classes, imageShape, learningRate: lr.learningRate, elapsedSeconds: (Date.now() - startedMs) / 1000 });
    progress({ phase: 'train', detail: `${arch.text} on ${mix.transferCount} examples (${mix.hardCount} hard ×${mix.hardRepeat}), ${warm.loaded ? `warm start from #${parent!.seq}` : `from scratch: ${warm.reason}`}`, epoch: 0, epochs: s.epochs });
    const tr = await trainModel(student, set, {
      epochs: s.epochs,
      batchSize: s.batchSize,
      learningRate: recipe.learningRate,
      temperature: recipe.temperature,
      alpha: recipe.alpha,
      seed: s.seed,
      jitter: s.jitter,
      onProgress: (p) => progress({ phase: 'train', epoch: p.epoch, epochs: p.epochs, loss: p.loss, samplesPerSec: p.samplesPerSec }),
    });
    if (!Number.isFinite(tr.finalLoss)) throw new Error(`training diverged (final loss ${tr.finalLoss})`);

    // Steps 5 and 3: export first, because what is evaluated and gated is the artifact that would ship.
    progress({ phase: 'export', detail: 'ONNX fp32 + int8' });
    const fp32 = exportToOnnx(student, { docString: `Apprentice student ${arch.text} for ${model.name}, distilled from teacher ${teacher.id}`, metadata: { model: model.name, round: job.roundId, teacher: teacher.id } });
    const int8 = quantizeInt8(fp32);
    const artifact = s.artifact === 'int8' ? int8 : fp32;

    progress({ phase: 'evaluate', detail: `holdout ${holdout.count}, recent hard examples ${Math.min(hard.count, s.hardEvalCount)}` });
    const evalArtifact = await evaluateOnnx(artifact, holdout.features, inputSize, holdout.labels);
    const evalOther = await evaluateOnnx(s.artifact === 'int8' ? fp32 : int8, holdout.features, inputSize, holdout.labels);
    const teacherPred = argmaxRows(tHold.logits, classes);
    const recent = newestHard(hard, s.hardEvalCount, inputSize, classes, s.maxDeviceShare);
    const recentTeacherPred = argmaxRows(recent.teacherLogits, classes);
    const hardAgreement = recent.count ? agreement((await evaluateOnnx(artifact, recent.features, inputSize)).predictions, recentTeacherPred) : undefined;
    const parentEval = parent ? await evaluateParent(job.dataDir, parent, holdout.features, holdout.labels, recent, recentTeacherPred, inputSize) : undefined;
    // Shadow evaluation on each device's audit traffic (issue 13): recorded for rejected candidates too.
    progress({ phase: 'evaluate', detail: `shadow evaluation on the newest ${s.shadowAuditPerDevice} audit examples per device` });
    const shadow = await shadowEvaluate({
      registry, dataDir: job.dataDir, model: model.name, teacher, candidate: artifact, inputSize, classes,
      studentImage: model.inputSpec.image, teacherImage, perDevice: s.shadowAuditPerDevice, minSamples: s.shadowMinSamples, cohortOf: deps.cohortOf,
    });
    await recordShadowEval(registry, job.roundId, model.name, shadowRows(shadow));
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
      ...mix,
      hardSkipped: hard.skipped,
      hardLogitsComputed: hard.computed,
      hardQuarantined: hard.quarantined,
      // Teacher of its own image form: hard examples it saw from their source images, and those left out without one.
      ...(hard.fromSource || hard.noSource ? { hardFromSource: hard.fromSource, hardNoSource: hard.noSource } : {}),
      warmStarted: warm.loaded ? 1 : 0,
      warmStart: warm.loaded ? { fromSeq: parent!.seq, loaded: true } : { fromSeq: parent?.seq ?? null, loaded: false, reason: `trained from scratch: ${warm.reason}` },
      backend: backend.name,
      teacherId: teacher.id,
      arch: arch.text,
      quantization: s.artifact,
      holdoutFingerprint,
      parentSeq: parent?.seq ?? null,
      shadow: shadowSummary(shadow),
      // Per-cohort aggregates: numbers, so they go into the signed manifest's metrics.
      ...shadowManifestMetrics(shadow),
    };

    progress({ phase: 'gate' });
    const decision = gate({ holdoutAccuracy: evalArtifact.accuracy ?? NaN, parentHoldoutAccuracy: parentAccuracy, parentSeq: parent?.seq, tolerance: s.tolerance, minHoldoutAccuracy: s.minHoldoutAccuracy });
    metrics.gate = decision;
    if (!decision.pass) return { state: 'rejected', reason: decision.reason, exampleCount: hard.count, metrics };

    // Step 6: the artifact is stored first (content-addressed: the parent signs only a manifest that
    // describes a file it can read), then the round's sequence, then the manifest, signed by the parent.
    progress({ phase: 'store' });
    const stored = await storeArtifact(job.dataDir, artifact);
    progress({ phase: 'sign' });
    const seq = await (deps.allocateSeq ?? (() => allocateReleaseSeq(registry)))();
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
      createdAt: (deps.now ?? (() => new Date()))(),
      validityDays: s.validityDays,
      selfTest: { input: sample, expected, tolerance: selfTestTolerance(s) },
    });
    const signed: SignedManifest = await signer.sign(manifest);

    // Step 7: content-addressed files first, the registry row last (a row never points at a missing file).
    const other = await storeArtifact(job.dataDir, s.artifact === 'int8' ? fp32 : int8);
    await saveWeights(student, weightsBasePath(job.dataDir, stored.sha256), arch.text);
    metrics[s.artifact === 'int8' ? 'fp32Sha256' : 'int8Sha256'] = other.sha256;
    insertRelease(registry, {
      model: model.name,
      seq,
      sha256: stored.sha256,
      bytes: artifact.byteLength,
      quantization: s.artifact,
      metrics,
      manifest: signed.manifest,
      signature: signed.signature,
      parentSeq: parent?.seq ?? null,
      roundId: job.roundId,
      artifactPath: stored.relPath,
      chunksPublished: false,
    });
    return { state: 'released', releaseSeq: seq, sha256: stored.sha256, artifactPath: stored.relPath, chunkSize: s.chunkSize, exampleCount: hard.count, metrics };
  } finally {
    student?.dispose();
    await teacher.dispose();
  }
}

/** The current release's artifact on today's holdout and recent traffic, for comparison (skipped if its file is gone). */
async function evaluateParent(
  dataDir: string,
  parent: ReleaseRow,
  features: Float32Array,
  labels: Int32Array,
  recent: { features: Float32Array; count: number },
  recentTeacherPred: Int32Array,
  inputSize: number,
): Promise<{ holdoutAccuracy?: number; hardAgreement?: number } | undefined> {
  let bytes: Uint8Array;
  try {
    bytes = await readArtifact(dataDir, parent.artifactPath, parent.sha256);
  } catch {
    return undefined;
  }
  const h = await evaluateOnnx(bytes, features, inputSize, labels);
  const r = recent.count ? agreement((await evaluateOnnx(bytes, recent.features, inputSize)).predictions, recentTeacherPred) : undefined;
  return { holdoutAccuracy: h.accuracy, hardAgreement: r };
}
