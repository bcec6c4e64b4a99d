import { createWriteStream, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { count, eq } from 'drizzle-orm';
import { loadDataset } from '../../shared/data/index.js';
import { createLogger } from '../../shared/log/index.js';
import { cloudConfigSchema } from '../config/schema.js';
import { startCloud, type CloudService } from '../server.js';
import { cloudClient, type CloudClient } from './cloud-client.js';
import { freePort, startFleet, type DemoFleet } from './fleet.js';
import { accuracyOf } from './measure.js';
import { DEMO_COHORT_LINES, DEMO_INPUT_SIZE, DEMO_MODEL, pct, Stopped, type CohortLineSettings, type DemoOptions, type DemoSummary, type DeviceInfo, type PoolSizes, type RoundRow } from './options.js';
import { evaluationSet, splitPools, TrafficStream } from './pools.js';
import { runRounds, selectedCounts, type DeviceData } from './rounds.js';
import { gapsOf } from './report.js';
import type { ShiftName } from './shifts.js';
import { trainDemoTeacher } from './teacher.js';

export { DEMO_COHORT_LINES, DEMO_DEFAULTS, type DemoOptions, type DemoSummary, type DeviceInfo, type RoundRow } from './options.js';
export { summaryLines } from './report.js';


/** The cached reference teacher, trained on first use; or the user's `--teacher`. */
export async function prepareTeacher(o: DemoOptions, status: (m: string) => void): Promise<{ file: string; trainedSeconds?: number }> {
  const file = o.teacher ? resolve(o.teacher) : resolve(o.cacheDir, `teacher-${o.teacherArch.replace(/[^0-9a-z]+/gi, '_')}-e${o.teacherEpochs}${o.teacherLimit ? `-n${o.teacherLimit}` : ''}.onnx`);
  if (existsSync(file)) return { file };
  if (o.teacher) throw new Error(`--teacher ${file}: no such file`);
  status(`training the reference teacher ${o.teacherArch} on augmented MNIST (first run only; cached as ${file})`);
  const { createProgressBar } = await import('../../shared/cli/progress.js');
  const bar = createProgressBar({ label: 'teacher', total: 1000, format: 'epoch {epoch} | loss {loss} | {sps} samples/s', enabled: o.progress, initial: { epoch: '-', loss: '-', sps: 0 } });
  const r = await trainDemoTeacher({
    out: file,
    arch: o.teacherArch,
    epochs: o.teacherEpochs,
    limit: o.teacherLimit,
    onProgress: (p) => bar.update(Math.round(p.fraction * 1000), { epoch: `${p.epoch + 1}/${p.epochs}`, loss: Number.isFinite(p.loss) ? p.loss.toFixed(3) : p.phase, sps: Math.round(p.samplesPerSec) }),
  });
  bar.update(1000);
  bar.stop();
  status(`teacher trained in ${r.seconds.toFixed(0)} s (${r.backend}); clean test accuracy ${r.cleanTestAccuracy === undefined ? '?' : pct(r.cleanTestAccuracy) + '%'}`);
  return { file, trainedSeconds: r.seconds };
}

/**
 * The demo's cohort lines, one per device (named after its shift and alone in the group of that name):
 * DEMO_COHORT_LINES, with the `cohort*` options given overriding every line, then `cohortLineOverrides` per line.
 */
export function demoCohortLines(o: Pick<DemoOptions, 'cohortEpochs' | 'cohortHardExampleShare' | 'cohortBaseLimit' | 'cohortJitter' | 'cohortLineOverrides'>, shifts: readonly ShiftName[]): ({ name: string; group: string } & CohortLineSettings)[] {
  const given = Object.fromEntries(
    Object.entries({ epochs: o.cohortEpochs, hardExampleShare: o.cohortHardExampleShare, baseLimit: o.cohortBaseLimit, jitter: o.cohortJitter }).filter(([, v]) => v !== undefined),
  ) as Partial<CohortLineSettings>;
  return [...new Set(shifts)].map((shift) => {
    const line: Record<string, unknown> = { name: shift, group: shift, ...DEMO_COHORT_LINES[shift], ...given, ...o.cohortLineOverrides?.[shift] };
    for (const k of Object.keys(line)) if (line[k] === null) delete line[k];
    return line as unknown as { name: string; group: string } & CohortLineSettings;
  });
}

/** The demo model: round 0 from clean MNIST, scheduled rounds from hard examples, canary-first auto rollout. */
async function putModel(api: CloudClient, o: DemoOptions, teacherFile: string, shifts: readonly ShiftName[]): Promise<void> {
  const distill = {
    baseData: 'mnist:train',
    baseLimit: o.baseLimit,
    holdout: 'split:2000',
    epochs: o.epochs,
    batchSize: 128,
    lr: 3e-3,
    temperature: 4,
    alpha: 0.9,
    tolerance: 0.03,
    hardExampleShare: o.hardExampleShare,
    hardExampleMaxRepeat: 10,
    warmStart: true,
    artifact: 'int8',
    latencyBudgetMs: 100,
    ...(o.seed !== undefined ? { seed: o.seed } : {}),
    // Issue 13: each device is alone in its own first group (named after its shift): one cohort line per device.
    ...(o.cohorts ? { cohorts: demoCohortLines(o, shifts) } : {}),
  };
  const schedule = { intervalSeconds: 2, minNewExamples: Math.max(10, Math.round(o.traffic * o.devices * 0.02)), autoRollout: true, rollout: { target: 'all', canaryShare: 0.34, soakSeconds: 2, failureThreshold: 0.5 } };
  const put = await api.send('PUT', `/v1/models/${DEMO_MODEL}`, {
    // Flat: a cnn:/dscnn: student reshapes [784] to 28×28×1 inside the model (cloud/models/spec.ts
    // imageShapeOf). The image form lets a device take a PNG/JPEG digit too (white on black, like MNIST).
    inputSpec: {
      shape: [DEMO_INPUT_SIZE],
      dtype: 'float32',
      scaling: { scale: 1 / 255, offset: 0 },
      raw: 'uint8',
      image: { height: 28, width: 28, channels: 1, layout: 'nhwc', mean: [0], std: [1] },
    },
    labels: ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'],
    teacher: { files: [teacherFile], outputKind: 'logits' },
    studentSpec: o.student,
    distill,
    schedule,
  });
  if (put.status !== 200 && put.status !== 201) throw new Error(`PUT /v1/models/${DEMO_MODEL}: ${put.status} ${JSON.stringify(put.body)}`);
}

async function prepareDeviceData(devices: DeviceInfo[], evalPool: number, teacher: Uint8Array): Promise<{ data: Map<string, DeviceData>; pools: PoolSizes }> {
  const test = await loadDataset('mnist:test');
  const split = splitPools(test.count, devices.length, evalPool);
  const data = new Map<string, DeviceData>();
  for (const [i, d] of devices.entries()) {
    const evaluation = evaluationSet(test, d.shift, split[i]!, i);
    data.set(d.id, { stream: new TrafficStream(test, d.shift, split[i]!, i), evaluation, teacherAccuracy: await accuracyOf(teacher, evaluation) });
  }
  return { data, pools: { source: 'mnist:test', perDevice: devices.map((d, i) => ({ id: d.id, traffic: split[i]!.traffic.length, evaluation: split[i]!.evaluation.length })) } };
}

/**
 * `apprentice demo`: the whole loop on one machine. Embedded broker + cloud in this process, N edge
 * daemons as child processes provisioned through the cloud API, a teacher, round 0 from clean MNIST,
 * shifted traffic per device, hard examples back to the cloud, scheduled rounds, a table per round.
 * Accuracies are measured on each device's evaluation pool, which no device is ever sent (pools.ts).
 */
export async function runDemo(o: DemoOptions): Promise<DemoSummary> {
  const t0 = Date.now();
  const startedAt = new Date().toISOString();
  const dataDir = resolve(o.dataDir);
  if (o.fresh) rmSync(dataDir, { recursive: true, force: true });
  mkdirSync(dataDir, { recursive: true });
  const check = () => {
    if (o.signal?.aborted === true) throw new Stopped('stopped');
  };
  const status = (msg: string) => {
    if (o.progress) process.stderr.write(`· ${msg}\n`);
  };

  const teacher = await prepareTeacher(o, status);
  const teacherBytes = new Uint8Array(readFileSync(teacher.file));
  o.onStarting?.();
  check();

  // Cloud (embedded broker, API) in this process; logs to a file.
  const cloudDir = join(dataDir, 'cloud');
  mkdirSync(cloudDir, { recursive: true });
  const log = createLogger({ name: 'cloud', destination: createWriteStream(join(dataDir, 'cloud.log'), { flags: 'a' }) });
  const cfg = cloudConfigSchema.parse({
    dataDir: cloudDir,
    api: { bind: `127.0.0.1:${await freePort()}` },
    mqtt: { embedded: { bind: `127.0.0.1:${await freePort()}` } },
    rounds: { tickSeconds: 1 },
    rollouts: { tickSeconds: 0.5 },
  });
  const cloud: CloudService = await startCloud(cfg, { log });
  const api = cloudClient(cloud.apiUrl, cloud.adminToken);
  const storedBy = async (id: string): Promise<number> => {
    const { examples } = cloud.registry.t;
    const [row] = await cloud.registry.q.select({ n: count() }).from(examples).where(eq(examples.deviceId, id));
    return Number(row?.n ?? 0);
  };
  let fleet: DemoFleet | undefined;
  const rows: RoundRow[] = [];
  let pools: PoolSizes = { source: 'mnist:test', perDevice: [] };
  let stoppedBy: DemoSummary['stoppedBy'] = 'signal';
  // Assigned in the finally block, which runs before any return: a thrown error skips the return.
  let result!: DemoSummary;
  try {
    fleet = await startFleet({ api, brokerUrl: cloud.brokerUrl, dataDir, count: o.devices, ...(o.cohorts ? { groupsOf: (shift) => [shift, 'demo'] } : {}) });
    const devices = fleet.devices;
    o.out(`cloud API      ${cloud.apiUrl}   (admin token: ${join(cloudDir, 'admin-token')}; e.g. curl -H "Authorization: Bearer $(cat ${join(cloudDir, 'admin-token')})" ${cloud.apiUrl}/v1/devices)`);
    o.out(`MQTT broker    ${cloud.brokerUrl} (embedded)`);
    for (const d of devices) o.out(`device ${d.id.padEnd(18)} ${d.apiUrl}   traffic: ${d.shiftDescription}   (curl ${d.apiUrl}/v1/model)`);
    o.out(`teacher        ${teacher.file}`);

    await putModel(api, o, teacher.file, devices.map((d) => d.shift));
    const prepared = await prepareDeviceData(devices, o.evalPool, teacherBytes);
    pools = prepared.pools;
    const p0 = pools.perDevice[0]!;
    o.out(`pools          per device, disjoint slices of ${pools.source}: ${p0.traffic} traffic images, ${p0.evaluation} evaluation images (never sent to any device; every accuracy below is on these)`);
    o.out('');
    await runRounds({ o, api, devices, data: prepared.data, rows, storedBy, wait: { api, check, status, timeoutMs: o.roundTimeoutMs }, logHint: `${dataDir}/devices/*/edge.log` });
    stoppedBy = 'rounds';
  } catch (err) {
    if (!(err instanceof Stopped)) {
      stoppedBy = 'error';
      throw err;
    }
  } finally {
    const devices = fleet?.devices ?? [];
    const examplesOut = await selectedCounts(api, devices)
      .then((sel) => Promise.all(devices.map(async (d) => ({ id: d.id, selected: sel.get(d.id) ?? null, stored: await storedBy(d.id) }))))
      .catch(() => []);
    status('stopping: SIGTERM to the edge daemons, then the cloud');
    await fleet?.stop();
    await cloud.stop();
    const summary: DemoSummary = {
      version: 2,
      startedAt,
      seconds: (Date.now() - t0) / 1000,
      cloudApiUrl: cloud.apiUrl,
      adminTokenFile: join(cloudDir, 'admin-token'),
      teacher,
      settings: { student: o.student, baseLimit: o.baseLimit, epochs: o.epochs, traffic: o.traffic, evalPool: o.evalPool, hardExampleShare: o.hardExampleShare, cohorts: o.cohorts === true, ...(o.cohorts ? { cohortLines: demoCohortLines(o, (fleet?.devices ?? []).map((d) => d.shift)) } : {}), seed: o.seed ?? 1 },
      pools,
      devices,
      rows,
      gaps: gapsOf(devices, rows),
      examples: examplesOut,
      stoppedBy,
    };
    writeFileSync(join(dataDir, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
    result = summary;
  }
  return result;
}

