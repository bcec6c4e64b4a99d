import { describe, expect, it } from 'vitest';
import type { Dataset } from '../../../shared/data/index.js';
import { evaluationSet, MNIST_TEST_COUNT, splitPools, TrafficStream } from '../../../cloud/demo/pools.js';
import { runCli } from '../../helpers/cli.js';

/** A fake test set whose label is the image's index, so a drawn label says which image was drawn. */
function indexed(count: number): Dataset {
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) labels[i] = i;
  return { source: 'fake', count, shape: [784], features: new Float32Array(count * 784), labels, scaling: { scale: 1 / 255, offset: 0 } };
}

describe('demo pools (issue 11: accuracy only on images no device was sent)', () => {
  it('splits the test set into per-device traffic and evaluation pools that share no image', () => {
    const pools = splitPools(MNIST_TEST_COUNT, 3, 1000);
    const seen = new Set<number>();
    for (const p of pools) {
      expect(p.evaluation.length).toBe(1000);
      expect(p.traffic.length).toBe(2333);
      for (const i of [...p.evaluation, ...p.traffic]) {
        expect(seen.has(i), `image ${i} is in two pools`).toBe(false);
        seen.add(i);
      }
    }
    expect(seen.size).toBe(3 * 3333);
    // The same pools in every run: figures compare across runs.
    expect(splitPools(MNIST_TEST_COUNT, 3, 1000)[2]!.evaluation).toEqual(pools[2]!.evaluation);
  });

  it('a traffic stream draws only from its traffic pool, wrapping around; evaluation sets are fixed', () => {
    const test = indexed(60);
    const [pool] = splitPools(60, 2, 10);
    const stream = new TrafficStream(test, 'noise', pool!, 0);
    const drawn = stream.take(45);
    const traffic = new Set(pool!.traffic);
    for (const l of drawn.labels) expect(traffic.has(l)).toBe(true);
    expect(new Set(drawn.labels).size).toBe(20); // 45 draws over a pool of 20: it wraps
    const a = evaluationSet(test, 'noise', pool!, 0);
    const b = evaluationSet(test, 'noise', pool!, 0);
    expect(Array.from(a.labels)).toEqual(Array.from(pool!.evaluation));
    expect(a.features).toEqual(b.features);
    for (const l of a.labels) expect(traffic.has(l)).toBe(false);
  });

  it.each([
    [0, /evaluation pool of 0/],
    [3333, /leaves no traffic/],
    [1.5, /evaluation pool of 1.5/],
  ])('refuses an evaluation pool of %s per device', (n, message) => {
    expect(() => splitPools(MNIST_TEST_COUNT, 3, n)).toThrow(message);
  });

  it.each([
    [['demo', '--devices', '2', '--eval-pool', '5000'], /leaves no traffic/],
    [['demo', '--eval-pool', 'all'], /--eval-pool: expected a positive integer/],
    [['demo', '--student', 'resnet:50'], /--student: unknown architecture/],
  ])('apprentice %j exits 2 before starting anything', async (args, message) => {
    const r = await runCli(args as string[]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message as RegExp);
  });
});
