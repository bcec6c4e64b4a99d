import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { count, eq } from 'drizzle-orm';
import * as ort from 'onnxruntime-node';
import { loadDataset, type Dataset } from '../../shared/data/index.js';
import { createLogger } from '../../shared/log/index.js';
import { mulberry32, permutation } from '../../shared/util/random.js';
import { cloudConfigSchema } from '../config/schema.js';
import { examples } from '../registry/schema.js';
import { startCloud, type CloudService } from '../server.js';
import { SHIFTS, SHIFT_NAMES, type ShiftName } from './shifts.js';
import { trainDemoTeacher } from './teacher.js';

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
  /** Traffic examples per device per round. */
  traffic: number;
  student: string;
  baseLimit: number;
  epochs: number;
  hardExampleShare: number;
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
  student: 'mlp:64',
  baseLimit: 20_000,
  epochs: 4,
  hardExampleShare: 0.5,
  teacherArch: 'mlp:512,512',
  teacherEpochs: 5,
  roundTimeoutMs: 10 * 60_000,
} as const;

export interface DeviceInfo {
  id: string;
  shift: ShiftName;
  shiftDescription: string;
  apiUrl: string;
  configFile: string;
  logFile: string;
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
  devices: { id: string; shift: ShiftName; examples: number; studentAccuracy: number; teacherAccuracy: number; gap: number }[];
  error?: string;
}

export interface DemoSummary {
  version: 1;
  startedAt: string;
  seconds: number;
  cloudApiUrl: string;
  adminTokenFile: string;
  teacher: { file: string; trainedSeconds?: number };
  settings: Record<string, unknown>;
  devices: DeviceInfo[];
  rows: RoundRow[];
  /** Per device: round-0 gap, last gap, share of the gap closed. */
  gaps: { id: string; shift: ShiftName; round0Gap: number; lastRound: number; lastGap: number; closed: number }[];
  /** Per device: examples the device selected (its outbox counter) and the cloud stored. */
  examples: { id: string; selected: number | null; stored: number }[];
  stoppedBy: 'rounds' | 'signal' | 'error';
}

class Stopped extends Error {}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pct = (x: number) => (x * 100).toFixed(1);

async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

/** How to start `apprentice edge`: from dist when this module runs built, else through tsx. */
function edgeCommandLine(configFile: string): { cmd: string; args: string[] } {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith('.ts')) {
    const root = resolve(dirname(here), '../..');
    return { cmd: process.execPath, args: ['--import', 'tsx', join(root, 'bin/main.ts'), 'edge', '--config', configFile] };
  }
  const main = resolve(dirname(here), '../../bin/main.js');
  return { cmd: process.execPath, args: [main, 'edge', '--config', configFile] };
}

interface Api {
  get<T>(path: string): Promise<T>;
  send<T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
}

function cloudApi(base: string, token: string): Api {
  const call = async <T>(method: string, path: string, body?: unknown) => {
    const res = await fetch(base + path, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : null) as T };
  };
  return {
    async get<T>(path: string) {
      const r = await call<T>('GET', path);
      if (r.status !== 200) throw new Error(`GET ${path}: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body;
    },
    send: call,
  };
}

interface RoundView {
  id: string;
  state: string;
  releaseSeq: number | null;
  exampleCount: number | null;
  error: string | null;
  startedAt: string | null;
  finishedAt: string | null;
  createdAt: string;
  progress: { phase?: string; detail?: string; epoch?: number; epochs?: number } | null;
}

/** A device's traffic: its own slice of the MNIST test set under its shift; the labels stay here. */
class TrafficStream {
  private next = 0;
  private readonly order: Uint32Array;
  private readonly rand: () => number;
  constructor(
    private readonly test: Dataset,
    readonly shift: ShiftName,
    slot: number,
    slots: number,
  ) {
    const perm = permutation(test.count, mulberry32(99));
    this.order = perm.filter((_, i) => i % slots === slot);
    this.rand = mulberry32(1000 + slot);
  }
  take(n: number): { features: Float32Array; labels: Int32Array } {
    const features = new Float32Array(n * 784);
    const labels = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const idx = this.order[this.next++ % this.order.length]!;
      features.set(SHIFTS[this.shift].apply(this.test.features.subarray(idx * 784, (idx + 1) * 784), this.rand), i * 784);
      labels[i] = this.test.labels![idx]!;
    }
    return { features, labels };
  }
}

async function teacherPredict(session: ort.InferenceSession, features: Float32Array): Promise<Int32Array> {
  const n = features.length / 784;
  const res = await session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', features, [n, 784]) });
  const logits = res[session.outputNames[0]!]!.data as Float32Array;
  const classes = logits.length / n;
  const pred = new Int32Array(n);
  for (let r = 0; r < n; r++) {
    let best = 0;
    for (let j = 1; j < classes; j++) if (logits[r * classes + j]! > logits[r * classes + best]!) best = j;
    pred[r] = best;
  }
  return pred;
}

/** Sends `features` to a device's local API in batches; returns the predicted class and the serving release per example. */
async function predictOnDevice(apiUrl: string, features: Float32Array, batch = 100): Promise<{ pred: Int32Array; releases: Int32Array }> {
  const n = features.length / 784;
  const pred = new Int32Array(n);
  const releases = new Int32Array(n);
  for (let s = 0; s < n; s += batch) {
    const k = Math.min(batch, n - s);
    const slice = features.slice(s * 784, (s + k) * 784);
    const body = { input_b64: Buffer.from(slice.buffer).toString('base64'), encoding: 'float32', count: k, top_k: 1 };
    const res = await fetch(`${apiUrl}/v1/predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    if (res.status !== 200) throw new Error(`POST ${apiUrl}/v1/predict: ${res.status} ${await res.text()}`);
    const r = (await res.json()) as { release: number; predictions: { index: number }[] };
    r.predictions.forEach((p, i) => {
      pred[s + i] = p.index;
      releases[s + i] = r.release;
    });
  }
  return { pred, releases };
}

function table(devices: DeviceInfo[]): { header: string[]; row: (r: RoundRow) => string } {
  const W = 27;
  const devCols = devices.map((d) => `${d.id}`.padEnd(W));
  const header = [`round  release  ${devCols.join('  ')}  hard ex.  in set  to all devices`, `       ${' '.repeat(7)}  ${devices.map(() => 'student / teacher (gap)'.padEnd(W)).join('  ')}`];
  const row = (r: RoundRow) => {
    const cells = devices.map((d) => {
      const x = r.devices.find((v) => v.id === d.id);
      return (x ? `${pct(x.studentAccuracy)}% / ${pct(x.teacherAccuracy)}% (${pct(x.gap)})` : r.state).padEnd(W);
    });
    const rel = r.release === null ? r.state : `#${r.release}`;
    return `${String(r.round).padEnd(5)}  ${rel.padEnd(7)}  ${cells.join('  ')}  ${String(r.ingested).padStart(8)}  ${String(r.exampleCount ?? 0).padStart(6)}  ${r.rolloutSeconds === null ? '-' : r.rolloutSeconds.toFixed(1) + ' s'}`;
  };
  return { header, row };
}

/**
 * `apprentice demo`: the whole loop on one machine. Embedded broker + cloud in this process, N edge
 * daemons as child processes provisioned through the cloud API, a teacher, round 0 from clean MNIST,
 * shifted traffic per device, hard examples back to the cloud, scheduled rounds, a table per round.
 */
export async function runDemo(o: DemoOptions): Promise<DemoSummary> {
  const t0 = Date.now();
  const startedAt = new Date().toISOString();
  const dataDir = resolve(o.dataDir);
  if (o.fresh) rmSync(dataDir, { recursive: true, force: true });
  mkdirSync(dataDir, { recursive: true });
  const stopped = () => o.signal?.aborted === true;
  const check = () => {
    if (stopped()) throw new Stopped('stopped');
  };
  const status = (msg: string) => {
    if (o.progress) process.stderr.write(`· ${msg}\n`);
  };

  // 1. Teacher.
  let teacherFile = o.teacher ? resolve(o.teacher) : resolve(o.cacheDir, `teacher-${o.teacherArch.replace(/[^0-9a-z]+/gi, '_')}-e${o.teacherEpochs}${o.teacherLimit ? `-n${o.teacherLimit}` : ''}.onnx`);
  let trainedSeconds: number | undefined;
  if (!o.teacher && !existsSync(teacherFile)) {
    status(`training the reference teacher ${o.teacherArch} on augmented MNIST (first run only; cached as ${teacherFile})`);
    const { createProgressBar } = await import('../../shared/cli/progress.js');
    const bar = createProgressBar({ label: 'teacher', total: 1000, format: 'epoch {epoch} | loss {loss} | {sps} samples/s', enabled: o.progress, initial: { epoch: '-', loss: '-', sps: 0 } });
    const r = await trainDemoTeacher({
      out: teacherFile,
      arch: o.teacherArch,
      epochs: o.teacherEpochs,
      limit: o.teacherLimit,
      onProgress: (p) => bar.update(Math.round(p.fraction * 1000), { epoch: `${p.epoch + 1}/${p.epochs}`, loss: Number.isFinite(p.loss) ? p.loss.toFixed(3) : p.phase, sps: Math.round(p.samplesPerSec) }),
    });
    bar.update(1000);
    bar.stop();
    trainedSeconds = r.seconds;
    status(`teacher trained in ${r.seconds.toFixed(0)} s (${r.backend}); clean test accuracy ${r.cleanTestAccuracy === undefined ? '?' : pct(r.cleanTestAccuracy) + '%'}`);
  } else if (!existsSync(teacherFile)) {
    throw new Error(`--teacher ${teacherFile}: no such file`);
  }
  teacherFile = resolve(teacherFile);
  o.onStarting?.();
  const teacherSession = await ort.InferenceSession.create(teacherFile, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  check();

  // 2. Cloud (embedded broker, API) in this process; logs to a file.
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
  const children: { id: string; child: ChildProcess; exited: Promise<void> }[] = [];
  let summary: DemoSummary | undefined;
  const rows: RoundRow[] = [];
  const devices: DeviceInfo[] = [];
  let stoppedBy: DemoSummary['stoppedBy'] = 'signal';
  const api = cloudApi(cloud.apiUrl, cloud.adminToken);
  try {
    // 3. Devices: provisioned through the API (POST /v1/devices → bundle → edge.json), one process each.
    const shifts = SHIFT_NAMES.slice(0, o.devices);
    for (const [i, shift] of shifts.entries()) {
      const id = `demo-${i + 1}-${shift}`;
      const dir = join(dataDir, 'devices', id);
      mkdirSync(dir, { recursive: true });
      const configFile = join(dir, 'edge.json');
      let bundle: Record<string, unknown>;
      if (existsSync(configFile)) {
        bundle = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
      } else {
        const r = await api.send<Record<string, unknown>>('POST', '/v1/devices', { id, groups: ['demo'] });
        if (r.status !== 201) throw new Error(`provisioning ${id}: ${r.status} ${JSON.stringify(r.body)} (run with --fresh to start over)`);
        bundle = r.body;
      }
      const port = await freePort();
      const mqtt = bundle.mqtt as Record<string, unknown>;
      const config = {
        version: bundle.version,
        deviceId: bundle.deviceId,
        mqtt: { url: cloud.brokerUrl, username: mqtt.username, password: mqtt.password, reconnectMs: 1000, keepaliveSeconds: 10 },
        trustedKeys: bundle.trustedKeys,
        dataDir: join(dir, 'data'),
        api: { bind: `127.0.0.1:${port}`, maxBatch: 256, maxBodyBytes: 4 * 1024 * 1024 },
        telemetrySeconds: 1,
        runtime: { healthWindowSeconds: 2 },
        updates: { retryInitialMs: 1000, retryMaxMs: 10_000, mqttIdleTimeoutMs: 10_000 },
        // The demo student is tiny and its traffic shifted: select what it is unsure about, and a 5% audit sample.
        selection: { lowConfidence: { threshold: 0.9 }, lowMargin: { threshold: 0.3 }, highEntropy: { threshold: 0.35 }, audit: { rate: 0.05 }, caps: { perMinute: 10_000, perHour: 100_000 } },
      };
      writeFileSync(configFile, JSON.stringify(config, null, 2) + '\n', { mode: 0o600 });
      const logFile = join(dir, 'edge.log');
      const { cmd, args } = edgeCommandLine(configFile);
      const out = createWriteStream(logFile, { flags: 'a' });
      const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, APPRENTICE_LOG_LEVEL: process.env.APPRENTICE_LOG_LEVEL ?? 'info' } });
      child.stdout!.pipe(out, { end: false });
      child.stderr!.pipe(out, { end: false });
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      children.push({ id, child, exited });
      devices.push({ id, shift, shiftDescription: SHIFTS[shift].description, apiUrl: `http://127.0.0.1:${port}`, configFile, logFile });
    }

    o.out(`cloud API      ${cloud.apiUrl}   (admin token: ${join(cloudDir, 'admin-token')}; e.g. curl -H "Authorization: Bearer $(cat ${join(cloudDir, 'admin-token')})" ${cloud.apiUrl}/v1/devices)`);
    o.out(`MQTT broker    ${cloud.brokerUrl} (embedded)`);
    for (const d of devices) o.out(`device ${d.id.padEnd(18)} ${d.apiUrl}   traffic: ${d.shiftDescription}   (curl ${d.apiUrl}/v1/model)`);
    o.out(`teacher        ${teacherFile}`);
    o.out('');

    // 4. The model: round 0 from clean MNIST, scheduled rounds from hard examples, canary-first auto rollout.
    const settings = {
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
    };
    const schedule = { intervalSeconds: 2, minNewExamples: Math.max(10, Math.round(o.traffic * o.devices * 0.02)), autoRollout: true, rollout: { target: 'all', canaryShare: 0.34, soakSeconds: 2, failureThreshold: 0.5 } };
    const put = await api.send('PUT', '/v1/models/demo', {
      inputSpec: { shape: [784], dtype: 'float32', scaling: { scale: 1 / 255, offset: 0 }, raw: 'uint8' },
      labels: ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'],
      teacher: { files: [teacherFile], outputKind: 'logits' },
      studentSpec: o.student,
      distill: settings,
      schedule,
    });
    if (put.status !== 200 && put.status !== 201) throw new Error(`PUT /v1/models/demo: ${put.status} ${JSON.stringify(put.body)}`);

    const test = await loadDataset('mnist:test');
    const streams = new Map(devices.map((d, i) => [d.id, new TrafficStream(test, d.shift, i, devices.length)]));
    const { header, row } = table(devices);

    const listRounds = async () => (await api.get<{ rounds: RoundView[] }>('/v1/models/demo/rounds')).rounds;
    const storedBy = (id: string) => cloud.registry.db.select({ n: count() }).from(examples).where(eq(examples.deviceId, id)).get()?.n ?? 0;
    const storedTotal = () => cloud.registry.db.select({ n: count() }).from(examples).get()?.n ?? 0;

    /** Waits until the round leaves queued/running, with progress on stderr. */
    const waitRound = async (id: string): Promise<RoundView> => {
      let last = '';
      const deadline = Date.now() + o.roundTimeoutMs;
      for (;;) {
        check();
        const r = await api.get<RoundView>(`/v1/rounds/${id}`);
        if (r.state !== 'queued' && r.state !== 'running') return r;
        const p = r.progress;
        const line = p ? `round ${rows.length}: ${p.phase}${p.epoch !== undefined ? ` epoch ${p.epoch}/${p.epochs}` : ''}${p.detail ? ` — ${p.detail}` : ''}` : `round ${rows.length}: ${r.state}`;
        if (line !== last) status(line);
        last = line;
        if (Date.now() > deadline) throw new Error(`round ${id} did not finish within ${o.roundTimeoutMs / 1000} s`);
        await sleep(500);
      }
    };
    /** Waits until every device serves `release` (their local API says so); returns when. */
    const waitServing = async (release: number, since: number): Promise<number> => {
      const deadline = since + o.roundTimeoutMs;
      for (;;) {
        check();
        const seen = await Promise.all(
          devices.map(async (d) => {
            try {
              const r = await fetch(`${d.apiUrl}/v1/model`);
              return r.status === 200 ? ((await r.json()) as { release: number }).release : null;
            } catch {
              return null;
            }
          }),
        );
        if (seen.every((s) => s !== null && s >= release)) return Date.now();
        if (Date.now() > deadline) throw new Error(`release ${release} not on every device after ${o.roundTimeoutMs / 1000} s (serving: ${seen.join(', ')}); see ${dataDir}/devices/*/edge.log`);
        await sleep(250);
      }
    };
    /** Selected counts from the devices' telemetry (outbox counters), once every outbox is empty. */
    const deviceSelected = async (): Promise<Map<string, number | null>> => {
      const m = new Map<string, number | null>();
      for (const d of devices) {
        const v = await api.get<{ telemetry: { outbox?: { selected: number; depth: number } } | null }>(`/v1/devices/${d.id}`);
        m.set(d.id, v.telemetry?.outbox ? v.telemetry.outbox.selected : null);
      }
      return m;
    };
    const waitFlushed = async (timeoutMs = 20_000) => {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        check();
        const sel = await deviceSelected();
        if (devices.every((d) => sel.get(d.id) === storedBy(d.id))) return;
        await sleep(300);
      }
    };
    /** One traffic phase on the serving release: accuracy of student (device answers) and teacher, per device. */
    const traffic = async (release: number): Promise<RoundRow['devices']> =>
      Promise.all(
        devices.map(async (d) => {
          const { features, labels } = streams.get(d.id)!.take(o.traffic);
          const { pred, releases } = await predictOnDevice(d.apiUrl, features);
          const tpred = await teacherPredict(teacherSession, features);
          let n = 0;
          let s = 0;
          let t = 0;
          for (let i = 0; i < labels.length; i++) {
            if (releases[i] !== release) continue;
            n++;
            if (pred[i] === labels[i]) s++;
            if (tpred[i] === labels[i]) t++;
          }
          return { id: d.id, shift: d.shift, examples: n, studentAccuracy: n ? s / n : NaN, teacherAccuracy: n ? t / n : NaN, gap: n ? (t - s) / n : NaN };
        }),
      );

    // 5. Round 0 (manual), unless an earlier run already released one.
    let prior = await listRounds();
    let currentRound: RoundView;
    if (!prior.some((r) => r.state === 'released')) {
      const inFlight = prior.find((r) => r.state === 'queued' || r.state === 'running');
      const id = inFlight?.id ?? (await api.send<{ id: string }>('POST', '/v1/models/demo/rounds', {})).body.id;
      status(`round 0: distilling ${o.student} from the teacher on ${o.baseLimit} clean MNIST training images`);
      currentRound = await waitRound(id);
      if (currentRound.state !== 'released') throw new Error(`round 0 ${currentRound.state}: ${currentRound.error}`);
    } else {
      currentRound = prior.find((r) => r.state === 'released')!;
      status(`continuing from release #${currentRound.releaseSeq} of an earlier run (use --fresh to start over)`);
    }

    for (const line of header) o.out(line);
    let roundNo = 0;
    let stored0 = storedTotal();
    for (;;) {
      check();
      const rel = currentRound.releaseSeq!;
      const startedMs = Date.parse(currentRound.startedAt ?? currentRound.createdAt);
      status(`round ${roundNo}: release #${rel} rolling out (canary first)`);
      const allAt = await waitServing(rel, Date.now());
      const rolloutSeconds = (allAt - startedMs) / 1000;
      status(`round ${roundNo}: release #${rel} on every device; sending ${o.traffic} shifted test images to each`);
      const measured = await traffic(rel);
      await waitFlushed();
      const storedNow = storedTotal();
      const r: RoundRow = {
        round: roundNo,
        roundId: currentRound.id,
        state: currentRound.state,
        release: rel,
        exampleCount: currentRound.exampleCount,
        ingested: storedNow - stored0,
        rolloutSeconds,
        roundSeconds: currentRound.finishedAt && currentRound.startedAt ? (Date.parse(currentRound.finishedAt) - Date.parse(currentRound.startedAt)) / 1000 : null,
        devices: measured,
      };
      stored0 = storedNow;
      rows.push(r);
      o.out(row(r));
      if (o.rounds !== undefined && roundNo >= o.rounds) {
        stoppedBy = 'rounds';
        break;
      }
      // 6. The scheduler starts the next round from the hard examples; wait for a release. A rejected round
      //    or too few examples: more traffic on the serving release, then wait again.
      let next: RoundView | undefined;
      const knownIds = new Set((await listRounds()).map((x) => x.id));
      knownIds.delete(currentRound.id);
      prior = await listRounds();
      const seen = new Set(prior.filter((x) => x.createdAt <= currentRound.createdAt).map((x) => x.id));
      let idleSince = Date.now();
      while (!next) {
        check();
        const fresh = (await listRounds()).filter((x) => !seen.has(x.id)).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
        const cand = fresh[0];
        if (cand) {
          const done = await waitRound(cand.id);
          seen.add(cand.id);
          if (done.state === 'released') {
            next = done;
            break;
          }
          o.out(`${String(roundNo + 1).padEnd(5)}  ${done.state.padEnd(7)}  ${done.error ?? ''}`);
          idleSince = 0;
        }
        if (Date.now() - idleSince > 15_000) {
          status(`round ${roundNo + 1}: not started yet; more traffic on release #${rel}`);
          await traffic(rel);
          idleSince = Date.now();
        }
        await sleep(500);
      }
      currentRound = next;
      roundNo++;
    }
  } catch (err) {
    if (!(err instanceof Stopped)) {
      stoppedBy = 'error';
      throw err;
    }
  } finally {
    let examplesOut: DemoSummary['examples'] = [];
    try {
      const sel = new Map<string, number | null>();
      for (const d of devices) {
        const v = await api.get<{ telemetry: { outbox?: { selected: number } } | null }>(`/v1/devices/${d.id}`).catch(() => null);
        sel.set(d.id, v?.telemetry?.outbox?.selected ?? null);
      }
      examplesOut = devices.map((d) => ({ id: d.id, selected: sel.get(d.id) ?? null, stored: cloud.registry.db.select({ n: count() }).from(examples).where(eq(examples.deviceId, d.id)).get()?.n ?? 0 }));
    } catch {
      /* best effort */
    }
    status('stopping: SIGTERM to the edge daemons, then the cloud');
    for (const c of children) if (c.child.exitCode === null) c.child.kill('SIGTERM');
    await Promise.race([Promise.all(children.map((c) => c.exited)), sleep(10_000)]);
    for (const c of children) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
    await cloud.stop();
    await teacherSession.release().catch(() => undefined);
    const first = rows[0];
    const last = rows[rows.length - 1];
    const gaps =
      first && last
        ? devices.map((d) => {
            const g0 = first.devices.find((x) => x.id === d.id)!.gap;
            const gl = last.devices.find((x) => x.id === d.id)!.gap;
            return { id: d.id, shift: d.shift, round0Gap: g0, lastRound: last.round, lastGap: gl, closed: g0 > 0 ? (g0 - gl) / g0 : NaN };
          })
        : [];
    summary = {
      version: 1,
      startedAt,
      seconds: (Date.now() - t0) / 1000,
      cloudApiUrl: cloud.apiUrl,
      adminTokenFile: join(cloudDir, 'admin-token'),
      teacher: { file: teacherFile, trainedSeconds },
      settings: { student: o.student, baseLimit: o.baseLimit, epochs: o.epochs, traffic: o.traffic, hardExampleShare: o.hardExampleShare },
      devices,
      rows,
      gaps,
      examples: examplesOut,
      stoppedBy,
    };
    writeFileSync(join(dataDir, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
  }
  return summary!;
}

/** The closing summary, as lines. */
export function summaryLines(s: DemoSummary): string[] {
  const lines = ['', `summary (${s.rows.length} rounds in ${s.seconds.toFixed(0)} s):`];
  for (const g of s.gaps) {
    lines.push(`  ${g.id.padEnd(20)} ${s.rows[0]?.exampleCount ? `first gap (release #${s.rows[0].release})` : 'round-0 gap'} ${pct(g.round0Gap)} pts → round ${g.lastRound} gap ${pct(g.lastGap)} pts: ${Number.isFinite(g.closed) ? pct(g.closed) + '% of the gap closed' : 'no gap'}`);
  }
  for (const e of s.examples) lines.push(`  ${e.id.padEnd(20)} hard examples selected ${e.selected ?? '?'}, stored by the cloud ${e.stored}`);
  return lines;
}
