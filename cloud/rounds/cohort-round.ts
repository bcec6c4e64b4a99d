import { describeAugment } from '../distill/augment.js';
import { trainModel } from '../distill/trainer.js';
import { buildModel } from '../models/build.js';
import { baseSubset, cohortTrainingOf } from './cohort-training.js';
import { cohortMembers, cohortsNow, hasCohorts } from './cohorts.js';
import type { chooseLearningRate } from './lr.js';
import { mixTransferSet } from './mix.js';
import type { RoundRecipe } from './recipe.js';
import { currentRelease } from './releases.js';
import { shipStudent, type RoundContext } from './ship.js';
import { loadReleaseWeights } from './warm-weights.js';
import { loadHardExamples, sameImageSpec, type BaseData } from './transfer-set.js';
import type { LineOutcome } from './types.js';

/** What the base line of the round leaves to its cohort lines: the base transfer set and the recipe it chose. */
export interface CohortInputs {
  train: BaseData['train'];
  tTrain: { logits: Float32Array };
  imageShape: [number, number, number] | undefined;
  recipe: RoundRecipe;
  lr: Awaited<ReturnType<typeof chooseLearningRate>>;
}

/**
 * Issue 13 item 1: after the base student, one student per cohort. Each starts from the base line's
 * release (the one this round just made, or the current one when the gate refused it), trains on the
 * base data (or the first `cohortBaseLimit` of it) mixed with the hard examples of the cohort's own devices (the window and the per-device
 * share apply within the cohort, so a one-device cohort trains on all its own examples), and goes
 * through the same evaluate → gate → sign → store as the base, gated against the base release and
 * shipped with `cohort` and `parent` = that base release.
 *
 * @returns undefined when the model has no cohorts, else one outcome per cohort.
 */
export async function trainCohorts(ctx: RoundContext, inp: CohortInputs): Promise<LineOutcome[] | undefined> {
  const { registry, model, arch, inputSize, classes, teacher, job, progress } = ctx;
  const s = model.settings;
  if (!hasCohorts(s)) return undefined;
  const out: LineOutcome[] = [];
  const base = await currentRelease(registry, model.name, null);
  for (const c of await cohortsNow(registry, s)) {
    const members = await cohortMembers(registry, s, c.name);
    if (!base) {
      out.push({ state: 'rejected', cohort: c.name, reason: 'no base release to start the cohort student from', exampleCount: 0, metrics: { cohort: c.name, cohortDevices: members.length } });
      continue;
    }
    progress({ phase: 'transfer-set', detail: `cohort ${c.name}: hard examples of ${members.length} device(s) in group ${c.group}` });
    const hard = await loadHardExamples(registry, model.name, teacher, {
      inputSize,
      classes,
      window: s.hardExampleWindow,
      maxDeviceShare: s.maxDeviceShare,
      quarantine: s.labelQuarantine,
      studentImage: model.inputSpec.image,
      teacherImage: model.teacher.image,
      devices: members,
    });
    const how = cohortTrainingOf(s, c.name);
    // Augmenting with the teacher scores the student's augmented input with the teacher: both must take one input form.
    if (how.augment && ctx.teacherImage !== undefined && !sameImageSpec(ctx.teacherImage, model.inputSpec.image)) {
      out.push({ state: 'rejected', cohort: c.name, reason: 'augment needs a teacher that takes the student\'s input form (the teacher declares its own image form)', exampleCount: hard.count, metrics: { cohort: c.name, cohortDevices: members.length } });
      continue;
    }
    const { set, stats: mix } = mixTransferSet(
      baseSubset({ features: inp.train.features, count: inp.train.count, labels: inp.train.labels, teacherLogits: inp.tTrain.logits }, how.baseLimit, inputSize, classes),
      { features: hard.features, count: hard.count, labels: hard.labels, teacherLogits: hard.teacherLogits },
      { inputSize, classes, share: how.hardExampleShare, maxRepeat: s.hardExampleMaxRepeat },
    );
    const student = buildModel(arch, { inputSize, classes, imageShape: inp.imageShape, seed: s.seed });
    try {
      const warm = await loadReleaseWeights({ dataDir: job.dataDir, registry: ctx.registry, blobs: ctx.blobs }, base.sha256, student, arch.text);
      const epochs = how.epochs;
      const augmented = how.augment ? `, augmented with the teacher (${describeAugment(how.augment)})` : '';
      progress({ phase: 'train', detail: `cohort ${c.name}: ${arch.text} on ${mix.transferCount} examples (${mix.baseCount} base + ${mix.hardCount} hard ×${mix.hardRepeat})${augmented}, ${warm.loaded ? `warm start from base #${base.seq}` : `from scratch: ${warm.reason}`}`, epoch: 0, epochs });
      const tr = await trainModel(student, set, {
        epochs,
        batchSize: s.batchSize,
        learningRate: inp.recipe.learningRate,
        temperature: inp.recipe.temperature,
        alpha: inp.recipe.alpha,
        seed: s.seed,
        jitter: how.jitter,
        // Function matching: the teacher's logits on exactly the augmented batch the student sees.
        ...(how.augment ? { augment: how.augment, teacher: async (batch: Float32Array) => (await teacher.logits(batch, inputSize)).logits } : {}),
        onProgress: (p) => progress({ phase: 'train', detail: `cohort ${c.name}`, epoch: p.epoch, epochs: p.epochs, loss: p.loss, samplesPerSec: p.samplesPerSec }),
      });
      if (!Number.isFinite(tr.finalLoss)) {
        out.push({ state: 'rejected', cohort: c.name, reason: `training diverged (final loss ${tr.finalLoss})`, exampleCount: hard.count, metrics: { cohort: c.name } });
        continue;
      }
      out.push(await shipStudent(ctx, student, { cohort: c.name, members, parent: base, warmFrom: base, warm, hard, mix, tr, recipe: inp.recipe, lr: inp.lr, augment: how.augment }));
    } finally {
      student.dispose();
    }
  }
  return out;
}
