import type { Logger } from '../../shared/log/index.js';
import type { Manifest } from '../../shared/protocol/index.js';
import type { LoadedModel, Prediction, Predictor } from '../runtime/host.js';
import type { ApiMetrics } from './metrics.js';
import type { RecentPredictions } from './recent.js';
import type { SlidingWindowCap } from '../selection/limits.js';

/** What the API needs from the model host (`ModelHost` satisfies it). */
export interface ServingHost extends Predictor {
  readonly ready: boolean;
  current(): LoadedModel | undefined;
}

/** The shadow runner (edge/shadow), as the predict route sees it. */
export interface ShadowObserver {
  observe(input: Float32Array, n: number, running: Prediction): void;
}

/** Handed to `onPrediction` for every example answered (the hard-example selector hooks here). */
export interface PredictionEvent {
  id: string;
  /** The scaled model input. */
  input: Float32Array;
  probs: Float32Array;
  manifest: Manifest;
  /** The PNG/JPEG bytes the input was decoded from, for an image request (a view, not a copy). */
  source?: Uint8Array;
}

/** Handed to the feedback sink (the outbox): a user-supplied label for a remembered prediction. */
export interface FeedbackEvent extends PredictionEvent {
  /** Class index. */
  label: number;
  labelName: string;
  /** Epoch milliseconds of the prediction. */
  predictedAt: number;
}

export type FeedbackSink = (f: FeedbackEvent) => { stored: boolean } | Promise<{ stored: boolean }>;

export interface LocalApiLimits {
  /** Request bodies above this are refused with 413. */
  maxBodyBytes: number;
  /** Examples per request above this are refused with 413 naming the field. */
  maxBatch: number;
  /** Predictions remembered for feedback (count, bytes, age). */
  rememberPredictions: number;
  rememberBytes: number;
  rememberMs: number;
  /** PNG/JPEG inputs above this many pixels (width × height, from the header) are refused with 400 before decoding. */
  maxImagePixels: number;
  /** `/v1/feedback` labels per sliding minute; more get 429 (issue 10). 0 refuses all feedback. */
  feedbackPerMinute: number;
  /**
   * Requests handled at once, at most (the probes and /metrics are not counted); past it: 503 with
   * `Retry-After` (issue 9). Bounds the memory a burst of slow requests can hold. 0 = no limit.
   */
  maxConcurrent: number;
}

export const DEFAULT_LIMITS: LocalApiLimits = {
  maxBodyBytes: 1024 * 1024,
  maxBatch: 256,
  // 2,000 × 784 floats ≈ 6 MB: enough for feedback within minutes, small enough for a 256 MB Pi.
  rememberPredictions: 2_000,
  rememberBytes: 64 * 1024 * 1024,
  rememberMs: 60 * 60 * 1000,
  // A 12 MP camera frame (Pi Camera Module 3: 4608 × 2592); libvips streams it, never holding it whole.
  maxImagePixels: 12_000_000,
  feedbackPerMinute: 60,
  maxConcurrent: 64,
};

/** Shared by the resource apps; built once by `createLocalApi`. */
export interface ApiContext {
  host: ServingHost;
  /** The host, or a MicroBatcher in front of it. */
  predictor: Predictor;
  metrics: ApiMetrics;
  recent: RecentPredictions;
  limits: LocalApiLimits;
  clock: () => number;
  log: Logger;
  onPrediction: ((p: PredictionEvent) => void) | undefined;
  /** Runs the shadow candidate on what was just answered (issue 13 item 4); never delays the answer. */
  shadow: ShadowObserver | undefined;
  feedback: FeedbackSink;
  /** The per-minute feedback cap (its own, apart from the selector's caps). */
  feedbackCap: Pick<SlidingWindowCap, 'allows' | 'record' | 'limit'>;
}
