import type { Dataset } from '../../shared/data/index.js';
import { UsageError } from '../../shared/cli/errors.js';
import { mulberry32, permutation } from '../../shared/util/random.js';
import { SHIFTS, type ShiftName } from './shifts.js';

/**
 * Each device's images, split into two disjoint pools of the MNIST test set (issue 11): the traffic
 * pool is what the device is sent (and may send back as hard examples, so the cloud may train on it),
 * the evaluation pool is never sent to any device, so an accuracy measured on it is on images neither
 * the devices nor the cloud have seen. Devices get disjoint slices, so no image is in two devices' pools.
 */
export interface DevicePools {
  traffic: Uint32Array;
  evaluation: Uint32Array;
}

/** The demo draws from mnist:test. */
export const MNIST_TEST_COUNT = 10_000;

/** A fixed permutation: the same pools in every run, so figures compare across runs. */
const POOL_SEED = 99;

export function splitPools(count: number, devices: number, evalPerDevice: number, seed = POOL_SEED): DevicePools[] {
  if (!Number.isInteger(devices) || devices < 1) throw new UsageError(`devices must be a positive integer, got ${devices}`);
  const perDevice = Math.floor(count / devices);
  if (!Number.isInteger(evalPerDevice) || evalPerDevice < 1 || evalPerDevice >= perDevice) {
    throw new UsageError(`evaluation pool of ${evalPerDevice} images per device leaves no traffic: each of ${devices} device(s) has ${perDevice} test images (use 1..${perDevice - 1})`);
  }
  const perm = permutation(count, mulberry32(seed));
  const pools: DevicePools[] = [];
  for (let d = 0; d < devices; d++) {
    const slice = perm.filter((_, i) => i % devices === d).subarray(0, perDevice);
    pools.push({ evaluation: slice.slice(0, evalPerDevice), traffic: slice.slice(evalPerDevice) });
  }
  return pools;
}

export interface LabelledImages {
  features: Float32Array;
  labels: Int32Array;
}

function shifted(test: Dataset, shift: ShiftName, indices: ArrayLike<number>, rand: () => number): LabelledImages {
  const size = test.features.length / test.count;
  const features = new Float32Array(indices.length * size);
  const labels = new Int32Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    const idx = indices[i]!;
    features.set(SHIFTS[shift].apply(test.features.subarray(idx * size, (idx + 1) * size), rand), i * size);
    labels[i] = test.labels![idx]!;
  }
  return { features, labels };
}

/**
 * The evaluation pool under the device's shift, drawn once with a fixed seed: every round is measured
 * on the very same images, so round-to-round changes are the model's, not the sample's.
 */
export function evaluationSet(test: Dataset, shift: ShiftName, pool: DevicePools, slot: number): LabelledImages {
  return shifted(test, shift, pool.evaluation, mulberry32(2000 + slot));
}

/** A device's traffic: its traffic pool under its shift, in a loop (a fresh random shift each pass); the labels stay here. */
export class TrafficStream {
  private next = 0;
  private readonly rand: () => number;
  constructor(
    private readonly test: Dataset,
    readonly shift: ShiftName,
    private readonly pool: DevicePools,
    slot: number,
  ) {
    this.rand = mulberry32(1000 + slot);
  }
  take(n: number): LabelledImages {
    const idx = new Uint32Array(n);
    for (let i = 0; i < n; i++) idx[i] = this.pool.traffic[this.next++ % this.pool.traffic.length]!;
    return shifted(this.test, this.shift, idx, this.rand);
  }
}
