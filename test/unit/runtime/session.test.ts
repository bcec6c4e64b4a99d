import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ActivationError, InferenceError } from '../../../edge/runtime/errors.js';
import { ModelSession, softmaxRows } from '../../../edge/runtime/session.js';
import { denseModel, garbageModel, makeManifest, sampleInputs, writeModel } from '../../fixtures/onnx-models.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'apprentice-session-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function softmaxRef(logits: Float32Array, n: number, k: number): Float32Array {
  return softmaxRows(Float32Array.from(logits), n, k);
}

describe('softmaxRows', () => {
  it('is stable for large logits and sums to 1', () => {
    const out = softmaxRows(new Float32Array([1000, 1001, 999, -5, 0, 5]), 2, 3);
    for (const v of out) expect(Number.isFinite(v)).toBe(true);
    expect(out[0]! + out[1]! + out[2]!).toBeCloseTo(1, 6);
    expect(out[1]).toBeGreaterThan(out[0]!);
    expect(out[5]).toBeCloseTo(Math.exp(5) / (Math.exp(-5) + 1 + Math.exp(5)), 6);
  });
  it('turns a NaN logit into a NaN row', () => {
    const out = softmaxRows(new Float32Array([NaN, 1, 2]), 1, 3);
    expect(out.some(Number.isNaN)).toBe(true);
  });
});

describe('ModelSession', () => {
  it('returns softmax probabilities of a logits model that match the JS golden output', async () => {
    const model = denseModel({ sizes: [784, 10], seed: 3 });
    const s = await ModelSession.create(await writeModel(dir, model), makeManifest(model));
    const x = sampleInputs(4, 784);
    const raw = await s.runRaw(x, 4);
    const golden = model.forward(x, 4);
    for (let i = 0; i < golden.length; i++) expect(raw[i]).toBeCloseTo(golden[i]!, 4);
    const probs = await s.run(x, 4);
    const want = softmaxRef(golden, 4, 10);
    for (let i = 0; i < want.length; i++) expect(probs[i]).toBeCloseTo(want[i]!, 5);
    await s.dispose();
    await s.dispose(); // idempotent
  });

  it('passes probabilities of a probs model through unchanged', async () => {
    const model = denseModel({ sizes: [784, 16, 10], seed: 4, softmax: true });
    const s = await ModelSession.create(await writeModel(dir, model), makeManifest(model), { intraOpNumThreads: 1, graphOptimizationLevel: 'basic' });
    const x = sampleInputs(2, 784, 9);
    const probs = await s.run(x, 2);
    const golden = model.forward(x, 2);
    for (let i = 0; i < golden.length; i++) expect(probs[i]).toBeCloseTo(golden[i]!, 5);
    await s.dispose();
  });

  it('checks the input size against the manifest shape', async () => {
    const model = denseModel({ seed: 5 });
    const s = await ModelSession.create(await writeModel(dir, model), makeManifest(model));
    await expect(s.run(new Float32Array(783), 1)).rejects.toMatchObject({ code: 'input_size' });
    await expect(s.run(new Float32Array(784 * 2), 1)).rejects.toBeInstanceOf(InferenceError);
    await s.dispose();
    await expect(s.run(new Float32Array(784), 1)).rejects.toMatchObject({ code: 'inference_failed' });
  });

  it('refuses a model whose input size differs from the manifest (input_mismatch)', async () => {
    const good = denseModel({ seed: 6 });
    const wrong = denseModel({ sizes: [100, 10], seed: 6 });
    const err = await ModelSession.create(await writeModel(dir, wrong), makeManifest(good)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ActivationError);
    expect((err as ActivationError).reason).toBe('input_mismatch');
  });

  it('refuses bytes that are not ONNX (load_failed)', async () => {
    const junk = garbageModel();
    const err = await ModelSession.create(await writeModel(dir, junk, 'junk.onnx'), makeManifest(denseModel())).catch((e: unknown) => e);
    expect((err as ActivationError).reason).toBe('load_failed');
    const missing = await ModelSession.create(join(dir, 'nope.onnx'), makeManifest(denseModel())).catch((e: unknown) => e);
    expect((missing as ActivationError).reason).toBe('load_failed');
  });
});
