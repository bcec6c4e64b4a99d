/**
 * Edge bench of on-device shadow mode (issue 13 item 4): does a shadow candidate fit the edge memory
 * budget? The real daemon process as the systemd unit runs it (test/bench/daemon-process.ts: the unit's
 * Environment= lines, NODE_OPTIONS included; MemoryHigh=176M, MemoryMax=208M in the unit), serving a
 * 784→64→10 fp32 model, under 16 connections of single-example JSON POST /v1/predict:
 *
 * 1. `serving`: the served model alone, RssAnon/VmRSS sampled every 100 ms.
 * 2. `shadowing`: a second 784→64→10 model sent as a `manifest.shadow` release (its own ORT session,
 *    run after every answer), same load, same sampling; the daemon's own figures from its telemetry.
 *
 * Budget: the shipped-default budget of edge-daemon.bench.ts (RssAnon ≤ 64 MB, VmHWM ≤ 128 MB), and
 * VmHWM below the unit's MemoryHigh (176 MB). Config: provisioning fields + dataDir + api.bind +
 * telemetrySeconds 1 (to read the figures). Built by `npm run build`; run
 * `node dist/test/bench/edge-shadow.bench.js [--duration-ms 15000 --warmup-ms 3000]`.
 * Writes test/bench/results/edge-shadow.json and prints a one-line summary.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildArtifactDescriptor, chunkArtifact, generateSigningKey, signManifest, toTrustedKey } from '../../shared/manifest/index.js';
import { cloudInfo, decodePayload, manifestSchema, telemetrySchema, topics, type ShadowTelemetry, type SignedManifest } from '../../shared/protocol/index.js';
import { denseModel, makeManifest, sampleInputs, type TinyModel } from '../fixtures/onnx-models.js';
import { waitFor } from '../helpers/net.js';
import { writeBenchResult } from './common.js';
import { procMemory, sampleMemory, startDaemonWithRelease } from './daemon-process.js';
import { round, runLoad } from './http-load.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
};
const CONNECTIONS = 16;
const SIZES = [784, 64, 10];

function release(key: ReturnType<typeof generateSigningKey>, model: TinyModel, seq: number, shadowUntil?: Date): { signed: SignedManifest; bytes: Buffer } {
  const bytes = Buffer.from(model.bytes);
  const manifest = manifestSchema.parse({ ...makeManifest(model, { release: seq }), artifact: buildArtifactDescriptor(bytes, { chunkSize: 64 * 1024, quantization: 'fp32' }), ...(shadowUntil ? { shadow: { until: shadowUntil.toISOString() } } : {}) });
  return { signed: signManifest(manifest, key), bytes };
}

async function main(): Promise<void> {
  const durationMs = arg('duration-ms', 15_000);
  const warmupMs = arg('warmup-ms', 3_000);
  const key = generateSigningKey();
  const running = release(key, denseModel({ sizes: SIZES, seed: 1 }), 1);
  const candidate = release(key, denseModel({ sizes: SIZES, seed: 2 }), 2, new Date(Date.now() + 3_600_000));
  // Raw uint8 pixels (the manifest scales by 1/255), distinct inputs; 24 of them, as the load child takes them in one argv string (128 KiB max).
  const bodies = Array.from({ length: 24 }, (_, i) => JSON.stringify({ input: Array.from(sampleInputs(1, 784, 100 + i), (v) => Math.round(v * 255)) }));
  const dir = await mkdtemp(join(tmpdir(), 'apprentice-bench-shadow-'));
  const d = await startDaemonWithRelease({ root: ROOT, dataDir: join(dir, 'data'), signed: running.signed, bytes: running.bytes, trustedKeys: [toTrustedKey(key)], extraConfig: { telemetrySeconds: 1 } });
  const pid = d.child.pid!;
  let last: ShadowTelemetry | undefined;
  d.client.on('message', (topic, payload) => {
    if (topic === topics.telemetry(d.deviceId) && payload.length) last = decodePayload(telemetrySchema, payload).shadow ?? last;
  });
  try {
    // The cloud accepts telemetry.shadow (so the daemon reports its figures).
    await d.client.publishAsync(topics.cloudInfo(), JSON.stringify(cloudInfo(new Date())), { qos: 1, retain: true });
    await d.client.subscribeAsync(topics.telemetry(d.deviceId), { qos: 0 });
    const load = () => runLoad({ port: d.port, method: 'POST', path: '/v1/predict', bodies, connections: CONNECTIONS, durationMs, warmupMs });
    const phase = async () => {
      const sampler = sampleMemory(pid, 100);
      const predict = await load();
      const peak = await sampler.stop();
      return { predict, peak, after: await procMemory(pid) };
    };
    const idle = await procMemory(pid);
    const serving = await phase();

    const m = candidate.signed.manifest;
    for (const [i, c] of chunkArtifact(candidate.bytes, m.artifact.chunkSize).entries()) await d.client.publishAsync(topics.artifactChunk(m.artifact.sha256, i), c, { qos: 1, retain: true });
    await d.client.publishAsync(topics.desired(d.deviceId), JSON.stringify(candidate.signed), { qos: 1, retain: true });
    await waitFor(() => last?.state === 'running', 30_000, { intervalMs: 100, message: 'shadow loaded (telemetry)' });
    const loaded = await procMemory(pid);
    const shadowing = await phase();
    await new Promise((r) => setTimeout(r, 1_500)); // one more heartbeat with the figures
    const figures = last!;

    const unit = await readFile(join(ROOT, 'deploy/systemd/apprentice-edge.service'), 'utf8');
    const unitMB = (k: string) => Number(new RegExp(`^${k}=(\\d+)M`, 'm').exec(unit)?.[1] ?? NaN);
    const budget = { rssAnonMaxMB: 64, hwmMaxMB: 128, unitMemoryHighMB: unitMB('MemoryHigh'), unitMemoryMaxMB: unitMB('MemoryMax') };
    const hwm = shadowing.after.hwmMB;
    const result = {
      loadavgBefore: loadavg(),
      unitEnvironment: d.env,
      models: { served: `dense ${SIZES.join('→')} fp32 (${running.bytes.length} B)`, shadow: `dense ${SIZES.join('→')} fp32 (${candidate.bytes.length} B)` },
      load: { connections: CONNECTIONS, warmupMs, durationMs, body: 'single-example JSON, raw uint8 pixels' },
      idle,
      serving: { predict: serving.predict, peakRssAnonMB: serving.peak.maxRssAnonMB, peakRssMB: serving.peak.maxRssMB, after: serving.after },
      shadowLoaded: loaded,
      shadowing: { predict: shadowing.predict, peakRssAnonMB: shadowing.peak.maxRssAnonMB, peakRssMB: shadowing.peak.maxRssMB, after: shadowing.after, figures },
      shadowCost: { peakRssAnonMB: round(shadowing.peak.maxRssAnonMB - serving.peak.maxRssAnonMB, 1), rpsChange: round(shadowing.predict.rps / serving.predict.rps - 1, 3) },
      budget,
      withinBudget: shadowing.peak.maxRssAnonMB <= budget.rssAnonMaxMB && hwm <= budget.hwmMaxMB && hwm < budget.unitMemoryHighMB && shadowing.predict.non2xx === 0,
      loadavgAfter: loadavg(),
    };
    const file = writeBenchResult('edge-shadow', result);
    console.log(
      `edge shadow bench (loadavg ${loadavg().map((x) => x.toFixed(2)).join(' ')}): serving peak RssAnon ${serving.peak.maxRssAnonMB} MB at ${serving.predict.rps}/s; ` +
        `with a shadow ${shadowing.peak.maxRssAnonMB} MB (+${result.shadowCost.peakRssAnonMB}) at ${shadowing.predict.rps}/s (${round(result.shadowCost.rpsChange * 100, 1)}%), VmHWM ${hwm} MB; ` +
        `shadowed ${figures.requests}, skipped ${figures.skipped}, agreement ${figures.requests ? round(figures.agreements / figures.requests, 3) : 'n/a'}, shadow p50 ${figures.latencyMs.p50} ms → ${result.withinBudget ? 'within' : 'OVER'} budget (${file})`,
    );
  } finally {
    await d.client.publishAsync(topics.cloudInfo(), '', { qos: 1, retain: true }).catch(() => undefined);
    await d.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

void main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
