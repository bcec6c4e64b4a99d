import { baselineCandidates, DEFAULT_RECIPES, recipeCandidates, searchCandidates, type SearchContext, type SearchResult } from '../distill/recipe.js';
import type { ArchSpec, ImageShape } from '../models/spec.js';
import { splitLabelledBase } from './lr.js';
import type { DistillSettings } from './settings.js';

export interface RoundRecipe {
  mode: 'fixed' | 'search';
  temperature: number;
  alpha: number;
  learningRate: number;
  /** Search mode: both grids, as in `apprentice distill` (label training first, then distillation). */
  search?: { labelsOnly: SearchResult; distillation: SearchResult; budgetSeconds: number };
  /** Why the default recipe was used although `recipe: 'search'` was asked for. */
  note?: string;
}

/**
 * The round's T, alpha and learning rate. With `recipe: 'search'` the same search as
 * `apprentice distill` runs on a 10% validation split of the labelled base data, with a budget of
 * half of what is left of `roundMinutes` after `reserveMinutes` (the other half is for the training
 * itself). Trials stop starting once the budget is spent, so a search overruns it by at most one
 * trial. Without labels, or without time left, the settings' recipe is used and the note says why.
 */
export async function chooseRoundRecipe(
  arch: ArchSpec,
  base: { features: Float32Array; count: number; labels?: Int32Array; teacherLogits: Float32Array },
  s: DistillSettings,
  o: { inputSize: number; classes: number; imageShape?: ImageShape; learningRate: number; elapsedSeconds: number },
): Promise<RoundRecipe> {
  const fixed: RoundRecipe = { mode: 'fixed', temperature: s.temperature, alpha: s.alpha, learningRate: o.learningRate };
  if (s.recipe !== 'search') return fixed;
  const fallback = (why: string): RoundRecipe => ({ ...fixed, note: `recipe search skipped: ${why}; used T=${s.temperature}, alpha=${s.alpha}` });
  const k = Math.round(base.count * 0.1);
  if (!base.labels || k < 10 || base.count - k < 10) return fallback('no labelled base data to validate on');
  const budgetSeconds = (s.roundMinutes * 60 - s.reserveMinutes * 60 - o.elapsedSeconds) / 2;
  if (budgetSeconds <= 0) return fallback(`no time left in the round's ${s.roundMinutes}-minute limit after the ${s.reserveMinutes}-minute reserve`);
  const { fit, validation } = splitLabelledBase(base, s.seed, o);
  const ctx: SearchContext = { arch, imageShape: o.imageShape, fit, validation, batchSize: s.batchSize, seed: s.seed, jitter: s.jitter, patience: 2 };
  const epochs = s.searchEpochs ?? Math.min(s.epochs, 2);
  const labelsOnly = await searchCandidates(ctx, baselineCandidates(o.learningRate, DEFAULT_RECIPES.length), { epochs, budgetSeconds: budgetSeconds / 2 });
  const winner = labelsOnly.trials.find((t) => t.learningRate === labelsOnly.chosen.learningRate)!;
  const distillation = await searchCandidates(ctx, recipeCandidates(DEFAULT_RECIPES, winner.learningRate), {
    epochs, budgetSeconds: Math.max(0, budgetSeconds - labelsOnly.seconds), runFirst: false, before: [winner],
  });
  const c = distillation.chosen;
  return { mode: 'search', temperature: c.temperature, alpha: c.alpha, learningRate: c.learningRate, search: { labelsOnly, distillation, budgetSeconds } };
}
