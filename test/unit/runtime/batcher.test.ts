import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MicroBatcher } from '../../../edge/runtime/batcher.js';
import { InferenceError } from '../../../edge/runtime/errors.js';
import { ModelHost, type Prediction, type Predictor } from '../../../edge/runtime/host.js';
import { denseModel, makeManifest, sampleInputs, writeModel } from '../../fixtures/onnx-models.js';

let dir: string;
let host: ModelHost;
const model = denseModel({ seed: 31 });

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'apprentice-batcher-'));
  host = new ModelHost();
  await host.activate(await writeModel(dir, model), makeManifest(model));
});
afterAll(async () => {
  await host.dispose();
  await rm(dir, { recursive: true, force: true });
});

/** Counts the runs that reach the host. */
function counting(inner: Predictor): Predictor & { calls: number[] } {
  const calls: number[] = [];
  return { calls, predict: (x, n) => (calls.push(n), inner.predict(x, n)) };
}

describe('MicroBatcher', () => {
  it('coalesces concurrent calls into one run and hands each caller its own rows', async () => {
    const c = counting(host);
    const batcher = new MicroBatcher({ predictor: c, maxBatch: 64, maxWaitMs: 0 });
    const xs = Array.from({ length: 10 }, (_, i) => sampleInputs(1, 784, 100 + i));
    const results = await Promise.all(xs.map((x) => batcher.predict(x, 1)));
    expect(c.calls).toEqual([10]);
    for (let i = 0; i < xs.length; i++) {
      const solo = await host.predict(xs[i]!, 1);
      expect(results[i]!.probs).toHaveLength(10);
      for (let j = 0; j < 10; j++) expect(results[i]!.probs[j]).toBeCloseTo(solo.probs[j]!, 6);
    }
    expect(batcher.stats).toEqual({ batches: 1, examples: 10 });
  });

  it('runs a full batch at once and waits at most maxWaitMs otherwise', async () => {
    const c = counting(host);
    const batcher = new MicroBatcher({ predictor: c, maxBatch: 4, maxWaitMs: 5 });
    const x = sampleInputs(1, 784);
    const full = Promise.all([1, 2, 3, 4].map(() => batcher.predict(x, 1)));
    expect(c.calls).toEqual([4]); // flushed synchronously on the 4th
    await full;
    const t0 = performance.now();
    await batcher.predict(x, 1);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(4);
    expect(c.calls).toEqual([4, 1]);
    await batcher.predict(sampleInputs(8, 784), 8); // ≥ maxBatch: passed straight through
    expect(c.calls).toEqual([4, 1, 8]);
  });

  it('keeps multi-example requests together and rejects every caller when the run fails', async () => {
    const batcher = new MicroBatcher({ predictor: host, maxBatch: 64 });
    const [r2, r1] = await Promise.all([batcher.predict(sampleInputs(2, 784, 1), 2), batcher.predict(sampleInputs(1, 784, 2), 1)]);
    expect(r2.probs).toHaveLength(20);
    expect(r1.probs).toHaveLength(10);
    const failing: Predictor = { predict: async () => { throw new InferenceError('inference_failed', 'boom'); } };
    const b2 = new MicroBatcher({ predictor: failing });
    const out = await Promise.allSettled([b2.predict(new Float32Array(784), 1), b2.predict(new Float32Array(784), 1)]);
    expect(out.map((o) => o.status)).toEqual(['rejected', 'rejected']);
  });

  it('reruns a batch that produced NaN row by row, so only the poisoned request fails', async () => {
    const nan = denseModel({ seed: 32, nanOnNegativeSum: true });
    const nanHost = new ModelHost();
    await nanHost.activate(await writeModel(dir, nan), makeManifest(nan));
    const c = counting(nanHost);
    const b = new MicroBatcher({ predictor: c });
    const good = sampleInputs(1, 784, 3);
    const poisoned = good.map((v) => -v);
    const out = await Promise.allSettled([b.predict(good, 1), b.predict(poisoned, 1), b.predict(good, 1)]);
    expect(out.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((out[1] as PromiseRejectedResult).reason).toMatchObject({ code: 'non_finite_output' });
    expect(c.calls).toEqual([3, 1, 1, 1]);
    await nanHost.dispose();
  });

  it('runs rows of a different width separately', async () => {
    const seen: number[] = [];
    const echo: Predictor = {
      predict: async (x, n): Promise<Prediction> => {
        seen.push(x.length);
        return { probs: new Float32Array(n * 2), manifest: makeManifest(model), sha256: model.sha256, latencyMs: 0 };
      },
    };
    const b = new MicroBatcher({ predictor: echo });
    await Promise.all([b.predict(new Float32Array(4), 1), b.predict(new Float32Array(4), 1), b.predict(new Float32Array(6), 1)]);
    expect(seen.sort()).toEqual([6, 8]);
    expect(() => new MicroBatcher({ predictor: echo, maxBatch: 0 })).toThrow(RangeError);
  });
});
