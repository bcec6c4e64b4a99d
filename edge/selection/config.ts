import { z } from 'zod';
import type { EXAMPLE_REASONS } from '../../shared/protocol/index.js';

/**
 * Reasons the selector can give. `feedback` is the protocol's fifth reason, but it comes from a user
 * through the local API, never from the selector.
 */
/** `shadow_disagreement` is never scored: the shadow runner asks for it through `Selector.admit` (issue 13 item 4). */
export const SELECTION_REASONS = ['low_confidence', 'low_margin', 'high_entropy', 'audit', 'shadow_disagreement'] as const satisfies readonly (typeof EXAMPLE_REASONS)[number][];
export type SelectionReason = (typeof SELECTION_REASONS)[number];

const probability = z.number().min(0).max(1);
/** Caps are also the size of a ring buffer of timestamps, so they are bounded (100k → 800 KB). */
const capValue = z.number().int().min(0).max(100_000).nullable();

/**
 * Selection part of the daemon's config file. Every field has a default, so `{}` is a valid config.
 * A policy with `enabled: false` never fires; caps of `null` mean "no cap" (0 means "select nothing").
 *
 * @example
 * const config = selectionConfigSchema.parse({ lowConfidence: { threshold: 0.5 }, caps: { perHour: 60 } });
 */
export const selectionConfigSchema = z.strictObject({
  /** `low_confidence`: the top-1 probability is below `threshold`. */
  lowConfidence: z
    .strictObject({ enabled: z.boolean().default(true), threshold: probability.default(0.6) })
    .prefault({}),
  /** `low_margin`: top-1 minus top-2 probability is below `threshold`. */
  lowMargin: z
    .strictObject({ enabled: z.boolean().default(true), threshold: probability.default(0.15) })
    .prefault({}),
  /**
   * `high_entropy`: Shannon entropy H = -Σ p·ln p of the output is above `threshold`.
   * `unit: 'normalized'` (default) divides H by ln(K) for K classes, so the threshold is in [0, 1]
   * whatever the class count (1 = uniform output); `unit: 'nats'` compares raw H (max ln K).
   */
  highEntropy: z
    .strictObject({
      enabled: z.boolean().default(true),
      threshold: z.number().min(0).max(100).default(0.5),
      unit: z.enum(['normalized', 'nats']).default('normalized'),
    })
    .refine((h) => h.unit !== 'normalized' || h.threshold <= 1, { message: 'a normalized entropy threshold must be in [0, 1]', path: ['threshold'] })
    .prefault({}),
  /**
   * `audit`: a uniform random sample of all traffic at `rate` (0..1), whatever the model's confidence.
   * The RNG is drawn on every call, so the draw is independent of the output.
   */
  audit: z.strictObject({ rate: probability.default(0.01) }).prefault({}),
  /** Upper bounds on selected examples (all reasons together) in any sliding minute / hour. */
  caps: z.strictObject({ perMinute: capValue.default(30), perHour: capValue.default(600) }).prefault({}),
  /** Drop an input whose float32 bytes hash equal to one selected within the last `windowMs`. */
  dedupe: z
    .strictObject({
      enabled: z.boolean().default(true),
      windowMs: z.number().int().min(0).max(7 * 24 * 3600 * 1000).default(3600 * 1000),
      /** Bound on remembered hashes; the oldest are forgotten first (~100 B each). */
      maxEntries: z.number().int().min(1).max(1_000_000).default(10_000),
      algorithm: z.enum(['sha1', 'sha256']).default('sha1'),
    })
    .prefault({}),
});

export type SelectionConfig = z.infer<typeof selectionConfigSchema>;
export type SelectionConfigInput = z.input<typeof selectionConfigSchema>;

/** The defaults in one object (what `{}` parses to). */
export const DEFAULT_SELECTION_CONFIG: SelectionConfig = selectionConfigSchema.parse({});
