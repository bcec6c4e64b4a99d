import { randomUUID } from 'node:crypto';
import { float32ToBase64, type Example } from '../../shared/protocol/index.js';

export interface BuildExampleInput {
  /** The model input as the model saw it (already scaled). */
  input: Float32Array;
  /** The model output as probabilities. */
  probs: Float32Array;
  reason: Example['reason'];
  model: string | null;
  release: number | null;
  /** Only for `feedback`: the class a user said is right. */
  label?: number;
  /** Defaults to a fresh `crypto.randomUUID()`: the id is the idempotency key all the way to the cloud. */
  id?: string;
  /** Defaults to now. */
  at?: Date;
}

/**
 * Turns one inference into the protocol's `Example` (input as base64 float32, output as numbers).
 *
 * @example
 * const hit = selector.select({ input, probs });
 * if (hit) outbox.add(buildExample({ input, probs, reason: hit.reason, model: 'mnist', release: 7 }));
 */
export function buildExample({ input, probs, reason, model, release, label, id = randomUUID(), at = new Date() }: BuildExampleInput): Example {
  return {
    id,
    input: float32ToBase64(input),
    output: Array.from(probs),
    model,
    release,
    at: at.toISOString(),
    reason,
    ...(label === undefined ? {} : { label }),
  };
}
