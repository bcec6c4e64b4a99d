import type { REJECT_REASONS } from '../../shared/protocol/index.js';

/** Why an activation was refused; a subset of the protocol's reject reasons, so events can carry it as is. */
export type ActivationFailure = Extract<(typeof REJECT_REASONS)[number], 'load_failed' | 'self_test_failed' | 'input_mismatch'>;

/** Thrown by `ModelHost.activate` / `ModelSession.create`; the previous model (if any) keeps serving. */
export class ActivationError extends Error {
  override readonly name = 'ActivationError';
  constructor(
    readonly reason: ActivationFailure,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** `predict` called before any model was activated (the API answers 503). */
export class NoModelError extends Error {
  override readonly name = 'NoModelError';
  constructor() {
    super('no model is loaded');
  }
}

export type InferenceFailure =
  /** The batch does not hold n × the model's input size values (e.g. the model changed under a queued request). */
  | 'input_size'
  /** ORT refused or failed the run. */
  | 'inference_failed'
  /** The model produced NaN or ±Inf; the result is withheld and the health gate is told. */
  | 'non_finite_output';

export class InferenceError extends Error {
  override readonly name = 'InferenceError';
  constructor(
    readonly code: InferenceFailure,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
