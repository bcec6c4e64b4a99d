import type * as tf from '@tensorflow/tfjs';
import { trainModel } from '../distill/trainer.js';
import type { WarmStartResult } from '../distill/warm-start.js';
import { buildModel } from '../models/build.js';
import { imageShapeOf, isConv, parseArch } from '../models/spec.js';
import type { StoreRegistry } from '../registry/open.js';
import { fileBlobs } from '../artifacts/file-blobs.js';
import type { ArtifactBlobs } from '../artifacts/types.js';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import { Teacher } from '../teacher/ort-teacher.js';
import { initBackend } from '../tf/backend.js';
import { trainCohorts } from './cohort-round.js';
import { cohortLookup } from './cohorts.js';
import { chooseLearningRate } from './lr.js';
import { chooseRoundRecipe } from './recipe.js';
import { mixTransferSet } from './mix.js';
import { currentRelease } from './releases.js';
import { parseRoundModel, RoundConfigError } from './settings.js';
import { shipStudent, type RoundContext } from './ship.js';
import { resolveRoundInputs } from './inputs.js';
import { teacherCacheDir } from './store.js';
import { loadReleaseWeights } from './warm-weights.js';
import { baseTeacherLogits, loadBaseData, loadHardExamples, sameImageSpec } from './transfer-set.js';
import { imageSize } from '../../shared/image/preprocess.js';
import type { ManifestSigner, RoundJob, RoundOutcome, RoundProgress } from './types.js';

/**
 * Steps 1–7 of a round (transfer set → train → evaluate → gate → export → sign → store), for the base
 * line and then each cohort line (issue 13). Runs in the worker process.
 */
export interface RoundDeps {
  registry: StoreRegistry;
  signer: ManifestSigner;
  /** A line's release sequence (null: the base line; the worker asks the parent); default: allocated from the registry here. */
  allocateSeq?: (cohort: string | null) => number | Promise<number>;
  onProgress?: (p: Omit<RoundProgress, 'at'>) => void;
  now?: () => Date;
  /**
   * Where release artifacts, warm-start weights and the model's `artifact:` inputs are stored and read: the
   * registry on PostgreSQL; undefined = files under job.dataDir.
   */
  blobs?: ArtifactBlobs;
  /** Inserts a line's release row (the worker's is fenced on the job's epoch, fenced-store.ts); default insertRelease. */
  storeRelease?: RoundContext['storeRelease'];
  /** Where input warnings go (a plain path on PostgreSQL); default: the rounds' own logger. */
  log?: Logger;
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
  // Teacher files and dataset files as this replica's local paths (artifact: references resolved through the store).
  const inputs = await resolveRoundInputs(model, deps.blobs ?? fileBlobs({ dataDir: job.dataDir, log: deps.log ?? silentLogger }), deps.log);
  const data = { ...s, baseData: inputs.baseData, holdout: inputs.holdout };
  progress({ phase: 'transfer-set', detail: `${s.baseData} (backend ${backend.name})` });
  const { train, holdout } = await loadBaseData(data, inputSize, model.inputSpec.scaling, model.inputSpec.image);
  const teacher = await Teacher.create(inputs.teacherFiles, { outputKind: model.teacher.outputKind, intraOpNumThreads: 1, names: inputs.teacherNames });
  let student: tf.LayersModel | undefined;
  try {
    progress({ phase: 'teacher', detail: `soft labels for ${train.count} base examples` });
    const cacheDir = teacherCacheDir(job.dataDir);
    // A teacher with its own image form sees the same base images through its own preprocessing (issue 11).
    const teacherImage = model.teacher.image;
    const teacherBase = teacherImage && !sameImageSpec(teacherImage, model.inputSpec.image) ? await loadBaseData(data, imageSize(teacherImage), undefined, teacherImage) : { train, holdout };
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
    const parent = await currentRelease(registry, model.name);
    student = buildModel(arch, { inputSize, classes, imageShape, seed: s.seed });
    const warm: WarmStartResult = !s.warmStart
      ? { loaded: false, reason: 'warm start disabled' }
      : !parent
        ? { loaded: false, reason: 'no current release' }
        : await loadReleaseWeights({ dataDir: job.dataDir, registry, blobs: deps.blobs }, parent.sha256, student, arch.text);
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

    const ctx: RoundContext = {
      job, registry, signer, allocateSeq: deps.allocateSeq, progress, now: deps.now, model, arch, inputSize, classes, teacher, holdout, tHold, backendName: backend.name,
      teacherImage, cohortOf: await cohortLookup(registry, s), blobs: deps.blobs, storeRelease: deps.storeRelease,
    };
    const baseOutcome = await shipStudent(ctx, student, { cohort: null, parent, warmFrom: parent, warm, hard, mix, tr, recipe, lr });
    student.dispose();
    student = undefined;
    // Issue 13: one student per cohort, from the base line's release (the one just made, or the current one if the gate refused it).
    const cohorts = await trainCohorts(ctx, { train, tTrain, imageShape, recipe, lr });
    return cohorts ? { ...baseOutcome, cohorts } : baseOutcome;
  } finally {
    student?.dispose();
    await teacher.dispose();
  }
}
