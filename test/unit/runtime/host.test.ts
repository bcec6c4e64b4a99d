import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ActivationError, InferenceError, NoModelError } from '../../../edge/runtime/errors.js';
import { ModelHost, type InferenceObservation, type LoadedModel } from '../../../edge/runtime/host.js';
import type { InferenceRunner } from '../../../edge/runtime/session.js';
import type { Manifest } from '../../../shared/protocol/index.js';
import { denseModel, garbageModel, makeManifest, sampleInputs, writeModel, type TinyModel } from '../../fixtures/onnx-models.js';

let dir: string;
const a = denseModel({ seed: 11 });
const b = denseModel({ seed: 12 });
let pathA: string;
let pathB: string;
let manA: Manifest;
let manB: Manifest;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'apprentice-host-'));
  pathA = await writeModel(dir, a);
  pathB = await writeModel(dir, b);
  manA = makeManifest(a, { release: 1 });
  manB = makeManifest(b, { release: 2 });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function argmax(p: Float32Array): number {
  let best = 0;
  for (let i = 1; i < p.length; i++) if (p[i]! > p[best]!) best = i;
  return best;
}

function goldenArgmax(m: TinyModel, x: Float32Array): number {
  return argmax(m.forward(x, 1));
}

describe('ModelHost', () => {
  it('is not ready and refuses predictions before the first activation', async () => {
    const host = new ModelHost();
    expect(host.ready).toBe(false);
    expect(host.current()).toBeUndefined();
    await expect(host.predict(new Float32Array(784), 1)).rejects.toBeInstanceOf(NoModelError);
  });

  it('activates, predicts with golden outputs and reports the current model', async () => {
    const switched: LoadedModel[] = [];
    const host = new ModelHost({ clock: () => 1_700_000_000_000, observer: { switched: (m) => switched.push(m), observed: () => {} } });
    await host.activate(pathA, manA);
    expect(host.ready).toBe(true);
    expect(host.current()).toEqual({ manifest: manA, sha256: a.sha256, loadedAt: 1_700_000_000_000 });
    expect(switched.map((s) => s.sha256)).toEqual([a.sha256]);
    const x = sampleInputs(3, 784, 5);
    const r = await host.predict(x, 3);
    expect(r.manifest.release).toBe(1);
    expect(r.sha256).toBe(a.sha256);
    expect(r.probs).toHaveLength(30);
    expect(r.latencyMs).toBeGreaterThanOrEqual(0);
    expect(argmax(r.probs.subarray(10, 20))).toBe(goldenArgmax(a, x.subarray(784, 1568)));
    await host.dispose();
    expect(host.stats()).toMatchObject({ opened: 1, released: 1, live: 0 });
  });

  it('rejects a model that fails its self-test and keeps serving the old one', async () => {
    const host = new ModelHost();
    await host.activate(pathA, manA);
    const bad = makeManifest(b, { release: 2, expected: Array.from({ length: 10 }, () => 0) });
    const err = await host.activate(pathB, bad).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ActivationError);
    expect((err as ActivationError).reason).toBe('self_test_failed');
    expect(host.current()?.sha256).toBe(a.sha256);
    await host.predict(sampleInputs(1, 784), 1);
    await host.dispose();
    expect(host.stats()).toMatchObject({ opened: 2, released: 2 });
  });

  it('classifies load and signature failures', async () => {
    const host = new ModelHost();
    const junk = await writeModel(dir, garbageModel(), 'junk.onnx');
    await expect(host.activate(junk, manA)).rejects.toMatchObject({ reason: 'load_failed' });
    const small = denseModel({ sizes: [100, 10], seed: 13 });
    await expect(host.activate(await writeModel(dir, small), manA)).rejects.toMatchObject({ reason: 'input_mismatch' });
    expect(host.ready).toBe(false);
    await host.dispose();
    expect(host.stats().live).toBe(0);
  });

  it('finishes in-flight runs on the old session and releases it afterwards', async () => {
    const disposed: string[] = [];
    let unblock!: () => void;
    const gate = new Promise<void>((r) => (unblock = r));
    const fake = (name: string, block: boolean): InferenceRunner => ({
      inputSize: 784,
      classes: 10,
      async run(_x, n) {
        if (block) await gate;
        return new Float32Array(n * 10).fill(0.1);
      },
      runRaw: async () => Float32Array.from(manA.selfTest.expected),
      dispose: async () => {
        disposed.push(name);
      },
    });
    let next = 0;
    const host = new ModelHost({ openSession: async () => (next++ === 0 ? fake('old', true) : fake('new', false)) });
    await host.activate('old.onnx', manA);
    const inflight = host.predict(new Float32Array(784), 1);
    await host.activate('new.onnx', { ...manA, release: 2, artifact: { ...manA.artifact, sha256: 'f'.repeat(64) } });
    expect(host.current()?.manifest.release).toBe(2);
    expect((await host.predict(new Float32Array(784), 1)).manifest.release).toBe(2);
    expect(disposed).toEqual([]); // the old one is still running
    unblock();
    const r = await inflight;
    expect(r.manifest.release).toBe(1);
    await new Promise((res) => setImmediate(res));
    expect(disposed).toEqual(['old']);
    await host.dispose();
    expect(disposed).toEqual(['old', 'new']);
  });

  it('serialises concurrent activations: the last one wins', async () => {
    const host = new ModelHost();
    await Promise.all([host.activate(pathA, manA), host.activate(pathB, manB), host.activate(pathA, { ...manA, release: 3 })]);
    expect(host.current()?.manifest.release).toBe(3);
    await host.dispose();
    expect(host.stats()).toMatchObject({ opened: 3, released: 3 });
  });

  it('releases every replaced session across 50 hot swaps under load', async () => {
    const host = new ModelHost();
    const x = sampleInputs(1, 784);
    for (let i = 0; i < 50; i++) {
      const even = i % 2 === 0;
      const load = Array.from({ length: 4 }, () => host.predict(x, 1).catch(() => undefined));
      await host.activate(even ? pathA : pathB, even ? { ...manA, release: i + 1 } : { ...manB, release: i + 1 });
      await Promise.all(load);
    }
    // Let the last releases settle.
    for (let i = 0; i < 5 && host.stats().draining > 0; i++) await new Promise((r) => setImmediate(r));
    expect(host.stats()).toMatchObject({ opened: 50, released: 49, live: 1 });
    expect(host.current()?.manifest.release).toBe(50);
    await host.dispose();
    expect(host.stats()).toMatchObject({ opened: 50, released: 50, live: 0, draining: 0 });
  });

  it('withholds NaN outputs and tells the observer', async () => {
    const seen: InferenceObservation[] = [];
    const nan = denseModel({ seed: 14, nanOnNegativeSum: true });
    const host = new ModelHost({ observer: { switched: () => {}, observed: (o) => seen.push(o) } });
    await host.activate(await writeModel(dir, nan), makeManifest(nan));
    await host.predict(sampleInputs(1, 784), 1);
    const neg = sampleInputs(1, 784).map((v) => -v);
    const err = await host.predict(neg, 1).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InferenceError);
    expect((err as InferenceError).code).toBe('non_finite_output');
    await expect(host.predict(new Float32Array(5), 1)).rejects.toMatchObject({ code: 'input_size' });
    expect(seen.map((o) => [o.ok, o.nonFinite])).toEqual([
      [true, false],
      [false, true],
    ]);
    await host.dispose();
  });
});
