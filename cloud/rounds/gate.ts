/**
 * Step 4 of a round: the release gate (DESIGN.md "Cloud rules": must not regress). A candidate ships
 * only if its holdout accuracy — measured on the artifact that would ship, in onnxruntime — is at
 * least the current release's recorded holdout accuracy minus `tolerance`, and at least the absolute
 * floor. The holdout is fixed per model, so the two numbers are comparable across rounds.
 */
export interface GateInput {
  holdoutAccuracy: number;
  /** The current release's recorded holdout accuracy; undefined for a model's first release. */
  parentHoldoutAccuracy?: number;
  parentSeq?: number;
  tolerance: number;
  minHoldoutAccuracy?: number;
}

export type GateDecision = { pass: true; reason: string } | { pass: false; reason: string };

const f = (x: number) => Number(x.toFixed(4)).toString();

export function gate({ holdoutAccuracy: acc, parentHoldoutAccuracy: parent, parentSeq, tolerance, minHoldoutAccuracy = 0 }: GateInput): GateDecision {
  if (!Number.isFinite(acc)) return { pass: false, reason: `holdout accuracy is not a number (${acc})` };
  if (acc < minHoldoutAccuracy) return { pass: false, reason: `holdout accuracy ${f(acc)} < minimum ${f(minHoldoutAccuracy)}` };
  if (parent === undefined) {
    const why = parentSeq === undefined ? 'first release' : `parent #${parentSeq} has no comparable holdout accuracy`;
    return { pass: true, reason: `${why} (holdout accuracy ${f(acc)})` };
  }
  const bar = parent - tolerance;
  const who = parentSeq === undefined ? 'parent' : `parent #${parentSeq}`;
  // Compare with a small epsilon so a float rounding of the same accuracy does not flip the decision.
  if (acc + 1e-12 < bar) return { pass: false, reason: `holdout accuracy ${f(acc)} < ${who} ${f(parent)} − tolerance ${f(tolerance)}` };
  return { pass: true, reason: `holdout accuracy ${f(acc)} ≥ ${who} ${f(parent)} − tolerance ${f(tolerance)}` };
}
