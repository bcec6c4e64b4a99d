/**
 * On-device shadow mode (issue 13 items 4 and 7) with real parts: the real UpdateManager, the real
 * ModelHost serving one tiny ONNX model in onnxruntime, a ShadowRunner with its own ORT session for the
 * candidate, artifacts over real HTTP. The agreement figures are checked against the models' own JS
 * forward pass (test/fixtures/onnx-models.ts), not against hard-coded numbers.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { UpdateManager, type UpdateOutcome } from '../../../edge/updates/index.js';
import { ModelHost } from '../../../edge/runtime/index.js';
import { ShadowRunner, type ShadowDisagreement } from '../../../edge/shadow/index.js';
import { buildArtifactDescriptor, generateSigningKey, signManifest, toTrustedKey } from '../../../shared/manifest/index.js';
import { manifestSchema, shadowTelemetrySchema } from '../../../shared/protocol/index.js';
import { denseModel, makeManifest, sampleInputs, type TinyModel } from '../../fixtures/onnx-models.js';
import { tempDir } from '../../unit/updates/fixtures.js';
import { ArtifactServer, EventLog, waitFor } from '../../unit/updates/harness.js';

const key = generateSigningKey();
const server = new ArtifactServer();
beforeAll(() => server.start());
afterAll(() => server.stop());

const A = denseModel({ sizes: [784, 10], seed: 11 });
const B = denseModel({ sizes: [784, 10], seed: 12 });
const C = denseModel({ sizes: [784, 10], seed: 13 });
const N = 40;
const inputs = sampleInputs(N, 784, 5);

let dir: string;
let cleanup: () => Promise<void>;
let clock: number;
let timers: { fn: () => void; ms: number }[];
let host: ModelHost;
let runner: ShadowRunner;
let metrics: Registry;
let disagreements: ShadowDisagreement[];
let events: EventLog;
const managers: UpdateManager[] = [];

beforeEach(async () => {
  ({ dir, cleanup } = await tempDir('apprentice-shadow-'));
  clock = Date.now();
  timers = [];
  disagreements = [];
  events = new EventLog();
  metrics = new Registry();
  host = new ModelHost();
  runner = newRunner();
});
afterEach(async () => {
  await Promise.all(managers.splice(0).map((m) => m.dispose()));
  await runner.dispose();
  await host.dispose();
  await cleanup();
});

function newRunner(): ShadowRunner {
  return new ShadowRunner({ now: () => new Date(clock), metrics, maxInFlight: 4, onDisagreement: (d) => disagreements.push(d), setTimer: (fn, ms) => (timers.push({ fn, ms }), {}), clearTimer: () => undefined });
}

async function manager(): Promise<UpdateManager> {
  const m = await UpdateManager.create({ deviceId: 'pi-1', dataDir: dir, trustedKeys: [toTrustedKey(key)], host, emit: events.emit, retry: false, now: () => new Date(clock), shadow: runner });
  managers.push(m);
  return m;
}

/** A signed release of `model` served over HTTP (`served: false`: the URL answers 404). */
function release(model: TinyModel, seq: number, o: { shadowUntil?: number; served?: boolean } = {}) {
  const name = `m-${seq}-${model.sha256.slice(0, 8)}-${Math.random().toString(36).slice(2, 6)}`;
  const url = o.served === false ? server.serve(name, Buffer.alloc(0), { kind: 'status', status: 404, times: 1000 }) : server.serve(name, Buffer.from(model.bytes));
  const base = makeManifest(model, { release: seq });
  const manifest = manifestSchema.parse({
    ...base,
    artifact: buildArtifactDescriptor(model.bytes, { chunkSize: 64 * 1024, quantization: 'fp32', url }),
    ...(o.shadowUntil !== undefined ? { shadow: { until: new Date(o.shadowUntil).toISOString() } } : {}),
  });
  return { name, payload: Buffer.from(JSON.stringify(signManifest(manifest, key))), sha: model.sha256 };
}

const argmax = (p: Float32Array): number => p.indexOf(Math.max(...p));
/** Rows on which the two models' top classes agree, by their JS forward pass. */
function expectedAgreements(a: TinyModel, b: TinyModel): number {
  const pa = a.forward(inputs, N);
  const pb = b.forward(inputs, N);
  let k = 0;
  for (let r = 0; r < N; r++) if (argmax(pa.subarray(r * 10, r * 10 + 10)) === argmax(pb.subarray(r * 10, r * 10 + 10))) k++;
  return k;
}

/** Live traffic: the served model answers, then the shadow runs on the same rows (as /v1/predict does). */
async function serve(rows = N): Promise<void> {
  const before = runner.report()?.requests ?? 0;
  for (let r = 0; r < rows; r += 8) {
    const n = Math.min(8, rows - r);
    const x = inputs.subarray(r * 784, (r + n) * 784);
    const answer = await host.predict(x, n);
    expect(answer.sha256).toBe(A.sha256); // always answered by the running model
    runner.observe(x, n, answer);
    await waitFor(() => (runner.report()?.requests ?? 0) === before + r + n, 5000, 'shadow run');
  }
}

const files = async (sub: string) => (await readdir(join(dir, sub)).catch(() => [] as string[])).sort();
const droppedMetric = async (reason: string) => (await metrics.getSingleMetric('apprentice_edge_shadow_dropped_total')!.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0;

describe('shadow mode on the device (real ORT sessions)', () => {
  it('switch path: the candidate runs beside the served model, agreement is counted, and the switch re-uses its bytes', async () => {
    const m = await manager();
    expect(await m.handleDesired(release(A, 1).payload)).toMatchObject({ status: 'installed', release: 1 });
    const shadow = release(B, 2, { shadowUntil: clock + 3_600_000 });
    expect(await m.handleDesired(shadow.payload)).toEqual({ status: 'shadowing', release: 2, sha256: B.sha256 });
    // Beside, not instead: the floor, the slots and the served model did not move.
    expect(m.persisted.highestRelease).toBe(1);
    expect(m.persisted.current?.sha256).toBe(A.sha256);
    expect(host.current()?.sha256).toBe(A.sha256);
    expect(await files('shadow')).toEqual([`${B.sha256}.onnx`]);
    expect(await files('models')).toEqual([`${A.sha256}.onnx`]);
    // A redelivery of the retained shadow desired is not downloaded again.
    expect(await m.handleDesired(shadow.payload)).toMatchObject({ status: 'ignored' });

    await serve();
    const want = expectedAgreements(A, B);
    expect(want).toBeGreaterThan(0);
    expect(want).toBeLessThan(N); // the fixture models do disagree, so both branches are exercised
    const fig = shadowTelemetrySchema.parse(runner.report());
    expect(fig).toMatchObject({ release: 2, sha256: B.sha256, state: 'running', requests: N, agreements: want, skipped: 0 });
    expect(fig.latencyMs.p50).not.toBeNull();
    expect(disagreements).toHaveLength(N - want);
    for (const d of disagreements) {
      expect(d.manifest.artifact.sha256).toBe(A.sha256);
      expect(argmax(d.probs)).not.toBe(argmax(d.shadowProbs));
    }

    // The switch: the same bytes at a new sequence as a normal release. Its URL answers 404, so it can
    // only come from the shadow's file.
    const sw = release(B, 3, { served: false });
    expect(await m.handleDesired(sw.payload)).toEqual({ status: 'installed', release: 3, sha256: B.sha256 });
    expect(server.requests.filter((q) => q.path === `/${sw.name}`)).toHaveLength(0);
    expect(host.current()?.sha256).toBe(B.sha256);
    expect(m.persisted.highestRelease).toBe(3);
    expect(runner.sha256).toBeUndefined();
    expect(runner.report()).toMatchObject({ state: 'dropped', reason: 'switched', requests: N, agreements: want });
    expect(await files('shadow')).toEqual([]);
    expect(await files('models')).toEqual([A.sha256, B.sha256].map((s) => `${s}.onnx`).sort());
    expect(await droppedMetric('switched')).toBe(1);
  });

  it('no-switch path: past shadow.until the device stays on its model, drops the candidate and says so; the floor never moved', async () => {
    const m = await manager();
    await m.handleDesired(release(A, 1).payload);
    expect(await m.handleDesired(release(B, 5, { shadowUntil: clock + 60_000 }).payload)).toMatchObject({ status: 'shadowing' });
    await serve(16);
    // The window's timer was armed for the window; nobody (no cloud, no broker) sends a switch: it fires.
    expect(timers.at(-1)!.ms).toBe(60_000);
    clock += 60_001;
    timers.at(-1)!.fn();
    await waitFor(() => runner.sha256 === undefined, 2000, 'drop');
    await waitFor(() => runner.report()?.state === 'dropped', 2000, 'report');
    expect(runner.report()).toMatchObject({ state: 'dropped', reason: 'expired', requests: 16 });
    expect(await droppedMetric('expired')).toBe(1);
    expect(host.current()?.sha256).toBe(A.sha256);
    await new Promise((r) => setTimeout(r, 50)); // the drop handler deletes the file asynchronously
    expect(await files('shadow')).toEqual([]);
    // Traffic after the end is not shadowed.
    const x = inputs.subarray(0, 784);
    runner.observe(x, 1, await host.predict(x, 1));
    expect(runner.report()?.requests).toBe(16);
    // Release 5 was a shadow: release 2 (any model) is still above the floor.
    expect(await m.handleDesired(release(C, 2).payload)).toMatchObject({ status: 'installed', release: 2 });
  });

  it('a lost timer cannot keep a candidate: the first request past until drops it', async () => {
    const m = await manager();
    await m.handleDesired(release(A, 1).payload);
    await m.handleDesired(release(B, 2, { shadowUntil: clock + 1000 }).payload);
    clock += 1001;
    const x = inputs.subarray(0, 784);
    runner.observe(x, 1, await host.predict(x, 1));
    await waitFor(() => runner.report()?.state === 'dropped', 2000, 'drop');
    expect(runner.report()).toMatchObject({ reason: 'expired', requests: 0 });
  });

  it('refuses a shadow whose window already ended, one at or below the floor, and ignores one without a runner', async () => {
    const m = await manager();
    await m.handleDesired(release(A, 3).payload);
    const late: UpdateOutcome = await m.handleDesired(release(B, 4, { shadowUntil: clock - 1 }).payload);
    expect(late).toMatchObject({ status: 'rejected', reason: 'expired' });
    expect(await m.handleDesired(release(B, 3, { shadowUntil: clock + 60_000 }).payload)).toMatchObject({ status: 'rejected', reason: 'stale_release' });
    expect(events.events.map((e) => e.reason)).toEqual([undefined, 'expired', 'stale_release']);
    expect(runner.sha256).toBeUndefined();
    const plain = await UpdateManager.create({ deviceId: 'pi-1', dataDir: join(dir, 'other'), trustedKeys: [toTrustedKey(key)], host: new ModelHost(), emit: () => undefined, retry: false });
    managers.push(plain);
    expect(await plain.handleDesired(release(B, 9, { shadowUntil: clock + 60_000 }).payload)).toMatchObject({ status: 'ignored' });
  });

  it('a restart drops the candidate: the shadow folder is emptied and the served model restored', async () => {
    const m = await manager();
    await m.handleDesired(release(A, 1).payload);
    await m.handleDesired(release(B, 2, { shadowUntil: clock + 60_000 }).payload);
    expect(await files('shadow')).toHaveLength(1);
    await m.dispose();
    managers.splice(managers.indexOf(m), 1);
    await runner.dispose();
    runner = newRunner();
    const again = await manager();
    expect(await files('shadow')).toEqual([]);
    expect(await again.restore()).toMatchObject({ status: 'restored', release: 1, sha256: A.sha256 });
    expect(runner.sha256).toBeUndefined();
  });
});
