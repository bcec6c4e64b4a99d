import type { z } from 'zod';
import type { augmentSchema } from '../distill/augment.js';
import type { ShiftName } from './shifts.js';

/** Everything the demo (and its short form in test/e2e/loop.test.ts) can be told. */
export interface DemoOptions {
  dataDir: string;
  fresh: boolean;
  /** Stop after round N (round 0 plus N scheduled rounds); undefined = until stopped. */
  rounds?: number;
  /** The user's teacher (ONNX, logits); else the cached reference teacher, trained on first use. */
  teacher?: string;
  cacheDir: string;
  devices: number;
  /** Traffic examples per device per round (drawn from the device's traffic pool). */
  traffic: number;
  /** Images per device held out of all traffic: every reported accuracy is measured on these. */
  evalPool: number;
  student: string;
  baseLimit: number;
  epochs: number;
  hardExampleShare: number;
  /**
   * Issue 13: one cohort per device (each device alone in a group named after its shift, one declared cohort line each, DEMO_COHORT_LINES): every round
   * also trains a student per device; the table shows the cohort student, the shared (base) student
   * and the teacher on each device's evaluation pool.
   */
  cohorts?: boolean;
  /** Cohorts mode: epochs of every cohort student (its line's `epochs`); default DEMO_COHORT_LINES. */
  cohortEpochs?: number;
  /** Cohorts mode: share of the device's own hard examples in every cohort student's epoch (line `hardExampleShare`). */
  cohortHardExampleShare?: number;
  /** Cohorts mode: base examples every cohort student trains on (line `baseLimit`). */
  cohortBaseLimit?: number;
  /** Cohorts mode: random translation (pixels) while training every cohort student (line `jitter`). */
  cohortJitter?: number;
  /**
   * Cohorts mode: per-line settings over DEMO_COHORT_LINES (e.g. `{ rotation: { augment: { rotate: 30 } } }`),
   * applied after the `cohort*` options above; null removes a setting (`{ rotation: { augment: null } }`).
   * For the bench's trials (BENCH_COHORT_LINES).
   */
  cohortLineOverrides?: Partial<Record<ShiftName, { [K in keyof CohortLineSettings]?: CohortLineSettings[K] | null }>>;
  /** Distillation seed of every round (distill settings `seed`); default 1. */
  seed?: number;
  teacherArch: string;
  teacherEpochs: number;
  teacherLimit?: number;
  /** Per-round limit (round start to all devices serving). */
  roundTimeoutMs: number;
  /** Live output (table, URLs); progress goes to stderr. */
  out: (line: string) => void;
  progress: boolean;
  signal?: AbortSignal;
  /** Called once the teacher is ready, before anything is started (the CLI installs its Ctrl-C handler here: teacher training is synchronous). */
  onStarting?: () => void;
}

export const DEMO_DEFAULTS = {
  dataDir: '.apprentice/demo',
  cacheDir: '.apprentice/demo-cache',
  devices: 3,
  traffic: 1000,
  evalPool: 1000,
  student: 'mlp:64',
  baseLimit: 20_000,
  epochs: 4,
  hardExampleShare: 0.5,
  teacherArch: 'mlp:512,512',
  teacherEpochs: 5,
  roundTimeoutMs: 10 * 60_000,
} as const;

/** One cohort line's training settings (distill `cohorts[i]`, cloud/rounds/cohort-training.ts). */
export interface CohortLineSettings {
  epochs: number;
  hardExampleShare: number;
  baseLimit?: number;
  jitter: number;
  /** Augment with the teacher (distill `cohorts[i].augment`, cloud/distill/augment.ts); replaces `jitter`. */
  augment?: z.input<typeof augmentSchema>;
}

/**
 * The demo's cohort lines (`--cohorts`), one per device, named after its shift, when not told otherwise.
 * Chosen by looking at `npm run bench:cohorts` figures on the evaluation pools (test/bench/results/try-*.json):
 * random translation (jitter) helps the noise (shifted ±2 px) and thickness (±1 px) students and hurts
 * the rotation one. The rotation cohort is limited by how few rotated examples it has, so it augments
 * with the teacher: half of its training images are rotated by up to ±40° (the range its device's
 * hard examples show) and labelled by the teacher on the rotated view (augment.ts, function matching).
 */
export const DEMO_COHORT_LINES: Record<ShiftName, CohortLineSettings> = {
  rotation: { epochs: 10, hardExampleShare: 0.6, jitter: 0, augment: { rotate: 40, probability: 0.5 } },
  thickness: { epochs: 6, hardExampleShare: 0.5, jitter: 2 },
  noise: { epochs: 6, hardExampleShare: 0.5, jitter: 2 },
};

export interface DeviceInfo {
  id: string;
  shift: ShiftName;
  shiftDescription: string;
  apiUrl: string;
  configFile: string;
  logFile: string;
}

/** One device's figures for one round. */
export interface DeviceRound {
  id: string;
  shift: ShiftName;
  /** Traffic images the device answered with this round's release. */
  examples: number;
  /** Images of the device's evaluation pool (never sent to any device) the accuracies are measured on. */
  evaluated: number;
  /** The served artifact (same sha256 as the device reports) on the evaluation pool. */
  studentAccuracy: number;
  teacherAccuracy: number;
  gap: number;
  /**
   * The device's own answers on this round's traffic, for contrast only: traffic repeats, so these
   * include images already sent back as hard examples and trained on.
   */
  trafficStudentAccuracy: number;
  /** Cohorts mode: the release the device serves (its cohort's), and the shared (base) student of the round on the same pool. */
  release?: number;
  sharedAccuracy?: number;
}

export interface RoundRow {
  round: number;
  roundId: string;
  state: string;
  release: number | null;
  /** Hard examples in the round's transfer set (lineage exampleCount). */
  exampleCount: number | null;
  /** Hard examples the cloud stored while this release served traffic. */
  ingested: number;
  /** Round start → every device serving the release, seconds. */
  rolloutSeconds: number | null;
  roundSeconds: number | null;
  devices: DeviceRound[];
  error?: string;
}

/** Sizes of each device's two disjoint pools of MNIST test images. */
export interface PoolSizes {
  source: string;
  perDevice: { id: string; traffic: number; evaluation: number }[];
}

export interface DemoSummary {
  version: 2;
  startedAt: string;
  seconds: number;
  cloudApiUrl: string;
  adminTokenFile: string;
  teacher: { file: string; trainedSeconds?: number };
  settings: Record<string, unknown>;
  pools: PoolSizes;
  devices: DeviceInfo[];
  rows: RoundRow[];
  /** Per device: round-0 gap, last gap, share of the gap closed (evaluation pool). */
  gaps: DeviceGap[];
  /** Per device: examples the device selected (its outbox counter) and the cloud stored. */
  examples: { id: string; selected: number | null; stored: number }[];
  stoppedBy: 'rounds' | 'signal' | 'error';
}

/**
 * Per device: round-0 gap (teacher − the round-0 student; in cohorts mode the shared round-0 student),
 * the last row's gap of the served student, and the share closed. Cohorts mode adds the shared
 * student's last gap and share closed, and whether the cohort student beats it on this device.
 */
export interface DeviceGap {
  id: string;
  shift: ShiftName;
  round0Gap: number;
  lastRound: number;
  lastGap: number;
  closed: number;
  sharedLastGap?: number;
  sharedClosed?: number;
  beatsShared?: boolean;
}

/** Thrown when the demo's AbortSignal fires: a normal stop, not a failure. */
export class Stopped extends Error {}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const pct = (x: number) => (x * 100).toFixed(1);

/** The demo's model name in the registry, and its input size (28 × 28 MNIST pixels). */
export const DEMO_MODEL = 'demo';
export const DEMO_INPUT_SIZE = 784;
