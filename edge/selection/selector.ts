import { performance } from 'node:perf_hooks';
import { SELECTION_REASONS, selectionConfigSchema, type SelectionConfig, type SelectionConfigInput, type SelectionReason } from './config.js';
import { DedupeWindow, SlidingWindowCap } from './limits.js';
import { scoreOutput, uncertaintyReason } from './policies.js';

export interface SelectorDeps {
  /** Monotonic milliseconds; defaults to `performance.now()` (wall-clock jumps must not open or close windows). */
  now?: () => number;
  /** Uniform in [0, 1); defaults to `Math.random`. */
  random?: () => number;
}

export interface SelectInput {
  /** The model input as the model saw it (hashed for de-duplication). */
  input: Float32Array;
  /** The model output as probabilities. */
  probs: Float32Array;
}

export interface Selection {
  reason: SelectionReason;
}

export type ReasonCounts = Record<SelectionReason, number>;

export interface SelectorCounters {
  /** Calls to `select`. */
  evaluated: number;
  /** Outputs that could not be scored (empty, NaN, negative); never selected. */
  invalid: number;
  /** Returned as hard examples, per reason. */
  selected: ReasonCounts;
  /** Had a reason but were refused by the per-minute or per-hour cap. */
  capped: ReasonCounts;
  /** Had a reason but an identical input was selected within the de-duplication window. */
  duplicate: ReasonCounts;
}

export interface Selector {
  readonly config: SelectionConfig;
  select(example: SelectInput): Selection | null;
  /**
   * An example chosen by another rule (a shadow disagreement, issue 13 item 4) through the same
   * de-duplication and the same caps as `select`, so it never adds to what the device may send.
   */
  admit(input: Float32Array, reason: SelectionReason): boolean;
  /** A snapshot (copies), for telemetry and Prometheus collectors. */
  counters(): SelectorCounters;
}

const zeroCounts = (): ReasonCounts => Object.fromEntries(SELECTION_REASONS.map((r) => [r, 0])) as ReasonCounts;

/**
 * Creates the hard-example selector.
 *
 * Combination order, for one call:
 * 1. **reason** — computed first because it is cheap (one pass over the output), has no side
 *    effects, and labels the counters below. Uncertainty reasons win in the order low_confidence,
 *    low_margin, high_entropy; otherwise `audit` when the RNG draw (taken on every scored call, so it
 *    is independent of the output) is below `audit.rate`. No reason → null; nothing is hashed or charged.
 * 2. **dedupe** — the input's float32 bytes are hashed; a hash selected within `dedupe.windowMs` →
 *    null, counted as `duplicate[reason]`. Duplicates therefore never consume cap budget.
 * 3. **caps** — the per-minute and per-hour sliding windows are both checked before either is
 *    charged; a full one → null, counted as `capped[reason]`. A capped input is not remembered, so it
 *    may be selected later.
 * 4. **selected** — both caps are charged, the hash is remembered, `selected[reason]` is counted.
 *
 * So a candidate passes the filters dedupe → caps, and only then is it selected for its reason.
 *
 * @example
 * const selector = createSelector(config.selection);
 * const hit = selector.select({ input, probs });
 * if (hit) outbox.add(buildExample({ input, probs, reason: hit.reason, model, release }));
 */
export function createSelector(config: SelectionConfigInput = {}, { now = () => performance.now(), random = Math.random }: SelectorDeps = {}): Selector {
  const cfg = selectionConfigSchema.parse(config);
  const caps = [
    cfg.caps.perMinute === null ? undefined : new SlidingWindowCap(cfg.caps.perMinute, 60_000),
    cfg.caps.perHour === null ? undefined : new SlidingWindowCap(cfg.caps.perHour, 3_600_000),
  ].filter((c): c is SlidingWindowCap => c !== undefined);
  const dedupe = cfg.dedupe.enabled ? new DedupeWindow(cfg.dedupe.windowMs, cfg.dedupe.maxEntries, cfg.dedupe.algorithm) : undefined;
  const counts = { evaluated: 0, invalid: 0, selected: zeroCounts(), capped: zeroCounts(), duplicate: zeroCounts() };

  /** Dedupe, then both caps checked before either is charged (see above). */
  function admit(input: Float32Array, reason: SelectionReason): boolean {
    const t = now();
    const hash = dedupe?.hash(input);
    if (dedupe && hash !== undefined && dedupe.has(hash, t)) {
      counts.duplicate[reason]++;
      return false;
    }
    if (!caps.every((c) => c.allows(t))) {
      counts.capped[reason]++;
      return false;
    }
    for (const c of caps) c.record(t);
    if (dedupe && hash !== undefined) dedupe.add(hash, t);
    counts.selected[reason]++;
    return true;
  }

  return {
    config: cfg,
    select({ input, probs }) {
      counts.evaluated++;
      const scores = scoreOutput(probs);
      if (!scores) {
        counts.invalid++;
        return null;
      }
      const draw = random();
      const reason: SelectionReason | null = uncertaintyReason(scores, cfg) ?? (draw < cfg.audit.rate ? 'audit' : null);
      if (reason === null) return null;

      return admit(input, reason) ? { reason } : null;
    },
    admit,
    counters() {
      return {
        evaluated: counts.evaluated,
        invalid: counts.invalid,
        selected: { ...counts.selected },
        capped: { ...counts.capped },
        duplicate: { ...counts.duplicate },
      };
    },
  };
}
