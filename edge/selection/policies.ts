import type { SelectionConfig, SelectionReason } from './config.js';

/** Scores of one output vector, computed in a single pass. */
export interface OutputScores {
  /** Top-1 probability. */
  maxProb: number;
  /** Top-1 minus top-2 probability (equals `maxProb` for a single class). */
  margin: number;
  /** Shannon entropy in nats, -Σ p·ln p, with 0·ln 0 = 0. */
  entropyNats: number;
  /** Entropy divided by ln(K): 0 for a one-hot output, 1 for a uniform one (0 when K = 1). */
  entropyNormalized: number;
}

/**
 * Scores a probability vector (the softmax output, not logits). Returns undefined when the vector
 * is empty or holds a non-finite or negative value: such an output says nothing about hardness
 * (the runtime's health checks deal with NaN outputs).
 */
export function scoreOutput(probs: Float32Array): OutputScores | undefined {
  if (probs.length === 0) return undefined;
  let top1 = -Infinity;
  let top2 = -Infinity;
  let entropy = 0;
  for (let i = 0; i < probs.length; i++) {
    const p = probs[i]!;
    if (!Number.isFinite(p) || p < 0) return undefined;
    if (p > top1) {
      top2 = top1;
      top1 = p;
    } else if (p > top2) {
      top2 = p;
    }
    if (p > 0) entropy -= p * Math.log(p);
  }
  const margin = probs.length === 1 ? top1 : top1 - top2;
  const maxEntropy = Math.log(probs.length);
  return {
    maxProb: top1,
    margin,
    entropyNats: entropy,
    entropyNormalized: maxEntropy > 0 ? entropy / maxEntropy : 0,
  };
}

/**
 * The uncertainty reason of an output, or null. When several fire, the first in this order wins:
 * low_confidence, low_margin, high_entropy (most to least direct sign that the student is unsure).
 */
export function uncertaintyReason(scores: OutputScores, config: SelectionConfig): Exclude<SelectionReason, 'audit'> | null {
  const { lowConfidence, lowMargin, highEntropy } = config;
  if (lowConfidence.enabled && scores.maxProb < lowConfidence.threshold) return 'low_confidence';
  if (lowMargin.enabled && scores.margin < lowMargin.threshold) return 'low_margin';
  if (highEntropy.enabled) {
    const h = highEntropy.unit === 'nats' ? scores.entropyNats : scores.entropyNormalized;
    if (h > highEntropy.threshold) return 'high_entropy';
  }
  return null;
}
