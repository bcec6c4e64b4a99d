/**
 * Fleet bench (issue 8, "Proof at scale"): `npm run bench:fleet`. On a private Mosquitto, in one run:
 *
 * 1. baseline "subscribers": N plain MQTT subscribers (a child process) receive the same bytes (the
 *    desired manifest and the artifact's retained chunks, QoS 1, same chunk size, 16 publishes in flight);
 * 2. baseline "engine-less": N simulated devices (`apprentice sim` workers: real edge update code, own
 *    MQTT connection and state each) install when the bench publishes their `desired` directly (the
 *    previous bench); 5% never connect, 1% fail their self-test;
 * 3. the real cloud: `apprentice cloud` as its own process (built, with a V8 CPU profile), the model and
 *    an uploaded ONNX release (POST /v1/models/{name}/releases), N sim devices provisioned through
 *    POST /v1/devices (5% never connect at all, `apprentice sim --never-connect`: their capabilities
 *    stay unknown and they must end `timed_out`; 1% fail their self-test), then `POST /v1/rollouts` with waves
 *    [0.01, 0.1, 0.5, 1], a 30 s soak and the telemetry gate (the default); the bench never publishes a
 *    manifest itself. Timed until the rollout is `completed`.
 *
 * Device state is on a real disk (BENCH_DATA_DIR, default .cache/bench/fleet; tmpfs is refused).
 * Env: BENCH_DEVICES (default 1000), BENCH_WORKERS (default the core count), BENCH_DEVICE_TIMEOUT (s,
 * default 60), BENCH_SOAK (s, default 30), BENCH_TICK (engine tick, s, default 1), BENCH_SKIP_BASELINES=1,
 * BENCH_RESULT (result name, default fleet; a run at another size merges into it under `runs`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, statfsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { and, eq, isNull } from 'drizzle-orm';
import mqtt, { type MqttClient } from 'mqtt';
import { Registry } from '../../cloud/registry/db.js';
import { rolloutTransitions } from '../../cloud/registry/schema.js';
import { SimFleet, SimPool, simPlan } from '../../edge/sim/index.js';
import { generateSigningKey, sha256Of } from '../../shared/manifest/index.js';
import { encodePayload, signedManifestSchema, topics } from '../../shared/protocol/index.js';
import { mapLimit } from '../../shared/util/map-limit.js';
import { percentileOfSorted } from '../../shared/util/percentile.js';
import { makeRelease, trustedKeysOf, type TestRelease } from '../fixtures/edge-release.js';
import { startMosquitto } from '../helpers/mosquitto.js';
import { sleep } from '../helpers/net.js';
import { writeBenchResult } from './common.js';
import { SysCounters, TOKEN, api, engineCounters, engineDelta, loadAverage1m, monotonicUs, procUsage, profileBreakdown, startCloudProcess } from './fleet-cloud.js';

const SELF = fileURLToPath(import.meta.url);
const PUBLISH_CONCURRENCY = 16;
const CONNECT_CONCURRENCY = 50;
const CHUNK = 32 * 1024;
const WAVES = [0.01, 0.1, 0.5, 1];
/**
 * The 5% that never connect: provisioned (credentials fetched), never built. They never report a status,
 * so the uploaded release (its manifest needs manifest.lineage-source) waits for their capabilities and
 * they end `timed_out` at their deadline, like any device that is off.
 */
const NEVER_CONNECT = 0.05;
const FAIL_SELF_TEST = 0.01;
const MODEL = 'fleet-bench';
const TMPFS_MAGIC = 0x01021994;

const round = (x: number, d = 1): number => Math.round(x * 10 ** d) / 10 ** d;
const epochNow = (): number => performance.timeOrigin + performance.now();
const log = (m: string): void => void process.stderr.write(`[fleet] ${m}\n`);

/** Seconds from t0 until k of the sorted arrival times (ms), for shares of `of`. */
function arrivals(at: number[], t0: number, of: number): { p50: number | null; p95: number | null; p100: number | null } {
  const s = at.map((x) => x - t0).sort((a, b) => a - b);
  const k = (share: number) => {
    const need = Math.ceil(share * of);
    return s.length >= need && need > 0 ? round(s[need - 1]! / 1000, 2) : null;
  };
  return { p50: k(0.5), p95: k(0.95), p100: k(1) };
}

/** Retained chunks, then one desired manifest per device, 16 publishes in flight (as the cloud's ReleasePublisher). */
async function publishDirect(pub: MqttClient, rel: TestRelease, shaTopic: string, ids: readonly string[]): Promise<void> {
  await mapLimit(rel.chunks, PUBLISH_CONCURRENCY, (c, i) => pub.publishAsync(topics.artifactChunk(shaTopic, i), c, { qos: 1, retain: true }));
  const payload = encodePayload(signedManifestSchema, rel.signed);
  await mapLimit(ids, PUBLISH_CONCURRENCY, (id) => pub.publishAsync(topics.desired(id), payload, { qos: 1, retain: true }));
}

async function clearDirect(pub: MqttClient, rel: TestRelease, shaTopic: string, ids: readonly string[]): Promise<void> {
  const empty = Buffer.alloc(0);
  await mapLimit(rel.chunks, PUBLISH_CONCURRENCY, (_c, i) => pub.publishAsync(topics.artifactChunk(shaTopic, i), empty, { qos: 1, retain: true }));
  await mapLimit(ids, PUBLISH_CONCURRENCY, (id) => pub.publishAsync(topics.desired(id), empty, { qos: 1, retain: true }));
}

/** Watches devices/+/+ : installed events of one release (first per device) and device messages by kind. */
class DeviceWatch {
  readonly installedAt = new Map<string, number>();
  readonly messages: Record<string, number> = { status: 0, telemetry: 0, events: 0 };
  private constructor(private readonly client: MqttClient, private readonly release: () => number | null) {}

  static async start(url: string, prefix: string, release: () => number | null): Promise<DeviceWatch> {
    const client = await mqtt.connectAsync(url, { clientId: `bench-watch-${prefix}`, clean: true });
    const w = new DeviceWatch(client, release);
    client.on('message', (topic, payload) => {
      const at = epochNow();
      const kind = topic.slice(topic.lastIndexOf('/') + 1);
      if (kind in w.messages) w.messages[kind]!++;
      if (kind !== 'events' || payload.length === 0) return;
      const ev = JSON.parse(payload.toString('utf8')) as { deviceId: string; type: string; release: number | null };
      if (ev.type === 'installed' && ev.release === w.release() && !w.installedAt.has(ev.deviceId)) w.installedAt.set(ev.deviceId, at);
    });
    await client.subscribeAsync(`apprentice/v1/devices/+/+`, { qos: 1 });
    return w;
  }

  resetMessages(): void {
    for (const k of Object.keys(this.messages)) this.messages[k] = 0;
  }

  async until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`${what}: not after ${timeoutMs / 1000} s (${this.installedAt.size} installed)`);
      await sleep(100);
    }
  }

  close(): Promise<void> {
    return this.client.endAsync();
  }
}

/** Baseline 1: N plain subscribers in a child process receive the manifest and every chunk. */
async function baselineSubscribers(url: string, n: number, rel: TestRelease): Promise<Record<string, unknown>> {
  const prefix = `base${Date.now().toString(36)}`;
  const ids = Array.from({ length: n }, (_, i) => SimFleet.deviceId(prefix, i));
  const shaTopic = sha256Of(Buffer.concat([rel.bytes, Buffer.from('baseline')]));
  const child: ChildProcess = spawn(process.execPath, [SELF, '--subs', String(n), url, prefix, shaTopic, String(rel.chunks.length), String(rel.bytes.length)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const msg = (type: string) => new Promise<Record<string, unknown>>((res, rej) => {
    child.on('message', (m: Record<string, unknown>) => m.type === type && res(m));
    child.once('exit', (c) => rej(new Error(`subscribers child exited ${c}`)));
  });
  const ready = msg('ready');
  const done = msg('done');
  await ready;
  const pub = await mqtt.connectAsync(url, { clientId: 'bench-pub-base', clean: true });
  const t0 = epochNow();
  await publishDirect(pub, rel, shaTopic, ids);
  const { at } = (await done) as { at: number[] };
  const t = arrivals(at, t0, n);
  await clearDirect(pub, rel, shaTopic, ids);
  await pub.endAsync();
  child.send({ type: 'stop' });
  await new Promise((r) => child.once('exit', r));
  return { subscribers: n, seconds: t };
}

async function subscribersChild([nS, url, prefix, sha, chunksS, bytesS]: string[]): Promise<void> {
  const n = Number(nS);
  const need = Number(chunksS);
  const total = Number(bytesS);
  const at: number[] = [];
  const clients: MqttClient[] = [];
  await mapLimit(Array.from({ length: n }, (_, i) => SimFleet.deviceId(prefix!, i)), CONNECT_CONCURRENCY, async (id, i) => {
    const c = await mqtt.connectAsync(url!, { clientId: id, clean: true, keepalive: 120 });
    clients[i] = c;
    const got = new Set<number>();
    let bytes = 0;
    let manifest = false;
    let finished = false;
    c.on('message', (topic, payload) => {
      if (finished || payload.length === 0) return;
      if (topic === topics.desired(id)) manifest = true;
      else {
        const idx = Number(topic.slice(topic.lastIndexOf('/') + 1));
        if (!got.has(idx)) {
          got.add(idx);
          bytes += payload.length;
        }
      }
      if (manifest && got.size === need && bytes === total) {
        finished = true;
        at.push(epochNow());
        if (at.length === n) process.send!({ type: 'done', at });
      }
    });
    await c.subscribeAsync([topics.desired(id), topics.artifactChunks(sha!)], { qos: 1 });
  });
  process.send!({ type: 'ready' });
  process.on('message', (m: { type: string }) => {
    if (m.type === 'stop') void Promise.all(clients.map((c) => c.endAsync(true))).then(() => process.exit(0));
  });
}

/** Baseline 2: the same sim devices install when the bench publishes `desired` directly (no cloud, no engine). */
async function baselineEngineless(url: string, n: number, workers: number, rel: TestRelease, key: ReturnType<typeof generateSigningKey>, dir: string): Promise<Record<string, unknown>> {
  const prefix = `eless${Date.now().toString(36)}`;
  const plan = simPlan(n, { neverConnect: NEVER_CONNECT, failSelfTest: FAIL_SELF_TEST });
  const ids = Array.from({ length: n }, (_, i) => SimFleet.deviceId(prefix, i));
  const healthy = n - plan.neverConnect.length - plan.failSelfTest.length;
  const watch = await DeviceWatch.start(url, prefix, () => rel.manifest.release);
  const pool = new SimPool({ devices: n, workers, mqttUrl: url, dataDir: join(dir, 'engineless'), trustedKeys: trustedKeysOf(key), prefix, connectConcurrency: CONNECT_CONCURRENCY, shares: { neverConnect: NEVER_CONNECT, failSelfTest: FAIL_SELF_TEST } });
  const c0 = Date.now();
  await pool.start();
  const connectSeconds = (Date.now() - c0) / 1000;
  const pub = await mqtt.connectAsync(url, { clientId: 'bench-pub-eless', clean: true });
  const t0 = epochNow();
  await publishDirect(pub, rel, rel.manifest.artifact.sha256, ids);
  await watch.until(() => watch.installedAt.size >= healthy, 600_000, 'engine-less installs');
  const t = arrivals([...watch.installedAt.values()], t0, healthy);
  const s = await pool.refresh();
  await pool.stop();
  await clearDirect(pub, rel, rel.manifest.artifact.sha256, ids);
  await Promise.all([pub.endAsync(), watch.close()]);
  return { devices: n, connected: s.connected, neverConnect: plan.neverConnect.length, failSelfTest: plan.failSelfTest.length, connectSeconds: round(connectSeconds), secondsToInstalled: t, rejected: s.rejected, simWorkersRssMiB: round(s.rssBytes / 2 ** 20) };
}

interface CloudRun {
  result: Record<string, unknown>;
  valid: boolean;
  summary: string;
}

/** The real cloud: upload, provision, POST /v1/rollouts with waves; until `completed`. */
async function cloudRun(url: string, sys: SysCounters, n: number, workers: number, rel: TestRelease, dir: string, o: { soak: number; timeout: number; tick: number }): Promise<CloudRun> {
  const cloud = await startCloudProcess(dir, url, o.tick);
  let stopPool: () => Promise<void> = async () => undefined;
  try {
    await api(cloud, 'PUT', `/v1/models/${MODEL}`, {
      inputSpec: { shape: [784], dtype: 'float32', scaling: { scale: 1 / 255, offset: 0 }, raw: 'uint8' },
      labels: Array.from({ length: 10 }, (_, i) => `digit_${i}`),
      teacher: { files: ['none.onnx'], outputKind: 'logits' },
      studentSpec: 'mlp:32',
      distill: { baseData: 'mnist:train', chunkSize: CHUNK },
    });
    const up = await api<{ seq: number; sha256: string }>(cloud, 'POST', `/v1/models/${MODEL}/releases`, rel.bytes, 'application/octet-stream');
    const prefix = `cloud${Date.now().toString(36)}`;
    const plan = simPlan(n, { neverConnect: NEVER_CONNECT, failSelfTest: FAIL_SELF_TEST });
    const watch = await DeviceWatch.start(url, prefix, () => up.seq);
    const pool: SimPool = new SimPool({ devices: n, workers, mqttUrl: url, dataDir: join(dir, 'devices'), trustedKeys: [], cloud: { url: cloud.apiUrl, token: TOKEN }, prefix, connectConcurrency: CONNECT_CONCURRENCY, shares: { neverConnect: NEVER_CONNECT, failSelfTest: FAIL_SELF_TEST } });
    const c0 = Date.now();
    stopPool = () => pool.stop();
    await pool.start();
    const connectSeconds = (Date.now() - c0) / 1000;
    log(`cloud: ${n} devices provisioned and ${n - plan.neverConnect.length} connected in ${round(connectSeconds)} s; rollout…`);
    await sleep(3_000); // the statuses of the last connects are committed (ingest batches them)
    const pid = cloud.child.pid!;
    const sys0 = await sys.read();
    watch.resetMessages();
    const engine0 = await engineCounters(cloud);
    const cpu0 = procUsage(pid);
    const m0 = monotonicUs();
    const t0 = epochNow();
    const r = await api<{ id: string }>(cloud, 'POST', '/v1/rollouts', { model: MODEL, release: up.seq, target: 'all', waves: WAVES, soakSeconds: o.soak, deviceTimeoutSeconds: o.timeout, canaryGraceSeconds: 10 });
    let peakRss = cpu0.rssBytes;
    let view: { state: string; counts: Record<string, number>; devices: { deviceId: string; state: string; reason: string | null }[]; coverage: unknown; transitions: { at: string; to: string; deviceId: string | null }[] } | undefined;
    const deadline = Date.now() + (o.soak * WAVES.length + o.timeout + 900) * 1000;
    let pollErrors = 0;
    for (;;) {
      // The detail lists every device: poll it less often at 10,000 (its cost is in the cloud's CPU).
      await sleep(n > 2_000 ? 5_000 : 2_000);
      peakRss = Math.max(peakRss, procUsage(pid).rssBytes);
      let v: NonNullable<typeof view>;
      try {
        v = await api<NonNullable<typeof view>>(cloud, 'GET', `/v1/rollouts/${r.id}`);
      } catch (err) {
        pollErrors++;
        log(`poll ${pollErrors} failed: ${(err as Error).message}`);
        if (pollErrors > 20) throw err;
        continue;
      }
      if (['completed', 'rolled_back', 'aborted', 'superseded'].includes(v.state)) {
        view = v;
        break;
      }
      if (Date.now() > deadline) throw new Error(`rollout not finished: ${v.state} ${JSON.stringify(v.counts)}`);
    }
    const cpu1 = procUsage(pid);
    const m1 = monotonicUs();
    const engine = engineDelta(engine0, await engineCounters(cloud));
    const sys1 = await sys.read();
    const completedAt = Date.parse(view.transitions.find((t) => t.deviceId === null && t.to === 'completed')?.at ?? new Date().toISOString());
    const healthy = n - plan.neverConnect.length - plan.failSelfTest.length;
    const t = arrivals([...watch.installedAt.values()], t0, healthy);
    const deviceMessages = watch.messages.status! + watch.messages.telemetry! + watch.messages.events!;
    const counts = view.counts;
    const ids = (xs: number[]) => new Set(xs.map((i) => SimFleet.deviceId(prefix, i)));
    const off = ids(plan.neverConnect);
    const failing = ids(plan.failSelfTest);
    const byState = (s: string) => view!.devices.filter((d) => d.state === s).map((d) => d.deviceId);
    const checks = {
      completed: view.state === 'completed',
      timedOutEqualsNeverConnected: (counts.timed_out ?? 0) === plan.neverConnect.length && byState('timed_out').every((d) => off.has(d)),
      everyConnectedNonFailingInstalled: (counts.installed ?? 0) === healthy && byState('installed').every((d) => !off.has(d) && !failing.has(d)),
      everyFailingQuarantined: (counts.quarantined ?? 0) === plan.failSelfTest.length && byState('quarantined').every((d) => failing.has(d)),
    };
    const valid = Object.values(checks).every(Boolean);
    await pool.stop();
    await watch.close();
    await cloud.stop();
    const prof = profileBreakdown(cloud.profileDir, { fromUs: m0, toUs: m1 });
    const profWhole = profileBreakdown(cloud.profileDir);
    // The rollout's own transitions (waves, completion), from the registry the cloud left.
    const reg = Registry.open(join(cloud.dataDir, 'registry.db'));
    const steps = reg.db.select().from(rolloutTransitions).where(and(eq(rolloutTransitions.rolloutId, r.id), isNull(rolloutTransitions.deviceId))).orderBy(rolloutTransitions.id).all()
      .map((x) => ({ atSeconds: round((Date.parse(x.at) - t0) / 1000, 2), from: x.fromState, to: x.toState, reason: x.reason }));
    reg.dispose();
    const cloudCpu = round(cpu1.cpuSeconds - cpu0.cpuSeconds, 2);
    const result = {
      devices: n,
      connected: n - plan.neverConnect.length,
      neverConnect: plan.neverConnect.length,
      failSelfTest: plan.failSelfTest.length,
      settings: { waves: WAVES, soakSeconds: o.soak, deviceTimeoutSeconds: o.timeout, canaryGraceSeconds: 10, engineTickSeconds: o.tick, telemetryGate: 'on (default requireTelemetry)', failureThreshold: 0.2, minFailures: 2 },
      connectSeconds: round(connectSeconds),
      pollErrors,
      secondsToInstalled: { ...t, of: `${healthy} connected non-failing devices` },
      secondsToCompleted: round((completedAt - t0) / 1000, 2),
      counts,
      coverage: view.coverage,
      rolloutTransitions: steps,
      checks,
      valid,
      cloud: {
        cpuSecondsDuringRollout: cloudCpu,
        peakRssMiB: round(Math.max(peakRss, cpu1.peakRssBytes) / 2 ** 20),
        deviceMessagesIngested: { ...watch.messages, total: deviceMessages },
        cpuMsPerDeviceMessage: round((cloudCpu * 1000) / deviceMessages, 3),
        profileDuringRollout: prof,
        profileWholeLife: profWhole,
        // Upper bound from the profile: every sample with a cloud/rollouts frame on its stack (SQLite and MQTT calls included).
        profileRolloutsMsPerDeviceMessage: round((prof.rolloutsSeconds * 1000) / deviceMessages, 3),
      },
      // Measured by the engine itself (process.cpuUsage() over its own code, GET /metrics), during the rollout.
      engine: {
        ...engine,
        cpuMsPerDeviceEvent: engine.events.total ? round((engine.cpuSeconds.total * 1000) / engine.events.total, 4) : null,
        shareOfCloudCpu: cloudCpu ? round(engine.cpuSeconds.total / cloudCpu, 3) : null,
      },
      brokerMessages: { received: sys1.received - sys0.received, sent: sys1.sent - sys0.sent },
    };
    const summary = `cloud: 50/95/100% installed ${t.p50}/${t.p95}/${t.p100} s, completed ${result.secondsToCompleted} s, cloud CPU ${cloudCpu} s, peak RSS ${result.cloud.peakRssMiB} MiB, engine ${result.engine.cpuMsPerDeviceEvent} ms CPU per device event, valid ${valid}`;
    return { result, valid, summary };
  } catch (err) {
    log(`cloud run failed: ${(err as Error).stack ?? String(err)}`);
    await stopPool().catch(() => undefined);
    throw err;
  } finally {
    await cloud.stop();
  }
}

/**
 * Target "no scan of every member per event": the whole cloud's CPU per device message it ingested at
 * 10,000 devices ≤ 1.5× that at 1,000 (when both runs are in the file).
 */
function scalingOf(runs: Record<string, unknown>): Record<string, unknown> | null {
  const per = (n: string) => ((runs[n] as { cloud?: { cloud?: { cpuMsPerDeviceMessage?: number } } } | undefined)?.cloud?.cloud?.cpuMsPerDeviceMessage);
  const engine = (n: string) => ((runs[n] as { cloud?: { engine?: { cpuMsPerDeviceEvent?: number | null } } } | undefined)?.cloud?.engine?.cpuMsPerDeviceEvent ?? null);
  const [a, b] = [per('1000'), per('10000')];
  if (a === undefined || b === undefined) return null;
  return { cloudCpuMsPerDeviceMessage: { at1000: a, at10000: b, ratio: round(b / a, 3), within1_5x: b <= 1.5 * a }, engineCpuMsPerDeviceEvent: { at1000: engine('1000'), at10000: engine('10000') } };
}

async function main(): Promise<void> {
  const n = Number(process.env.BENCH_DEVICES ?? 1000);
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`BENCH_DEVICES: expected a positive integer, got ${process.env.BENCH_DEVICES}`);
  const workers = Number(process.env.BENCH_WORKERS ?? availableParallelism());
  const o = { soak: Number(process.env.BENCH_SOAK ?? 30), timeout: Number(process.env.BENCH_DEVICE_TIMEOUT ?? 60), tick: Number(process.env.BENCH_TICK ?? 1) };
  if (!existsSync('dist/bin/main.js')) throw new Error('run `npm run build` first (the bench runs the built cloud)');
  const storage = resolve(process.env.BENCH_DATA_DIR ?? '.cache/bench/fleet');
  await mkdir(storage, { recursive: true });
  if (statfsSync(storage).type === TMPFS_MAGIC) throw new Error(`BENCH_DATA_DIR ${storage} is tmpfs: device state must be on a real disk`);
  const dir = await mkdtemp(join(storage, 'run-'));
  const key = generateSigningKey();
  // ~100 KB model (784→32→10 fp32) in 32 KiB chunks: 4 retained chunks per artifact.
  const rel = makeRelease(key, { release: 1, seed: 12, sizes: [784, 32, 10], chunkSize: CHUNK });
  const broker = await startMosquitto({ config: ['max_connections -1', 'max_queued_messages 100000', 'max_inflight_messages 100', 'set_tcp_nodelay true', 'sys_interval 1'] });
  const sys = await SysCounters.watch(broker.url);
  const load0 = loadAverage1m();
  try {
    const skip = process.env.BENCH_SKIP_BASELINES === '1';
    log(`N=${n}, ${workers} sim workers, state in ${dir}`);
    const subs = skip ? undefined : await baselineSubscribers(broker.url, n, rel);
    if (subs) log(`baseline subscribers: ${JSON.stringify(subs.seconds)}`);
    const eless = skip ? undefined : await baselineEngineless(broker.url, n, workers, rel, key, dir);
    if (eless) log(`baseline engine-less: ${JSON.stringify(eless.secondsToInstalled)}`);
    const run = await cloudRun(broker.url, sys, n, workers, rel, dir, o);
    log(run.summary);
    const soaks = o.soak * (WAVES.length - 1);
    const elessT = (eless?.secondsToInstalled as { p100: number } | undefined)?.p100;
    const installBound = elessT === undefined ? null : round(1.5 * elessT + soaks, 2);
    const t100 = (run.result.secondsToInstalled as { p100: number | null }).p100;
    const targets = {
      note: `soaks before the last wave: ${WAVES.length - 1} × ${o.soak} s = ${soaks} s`,
      installBoundSeconds: installBound,
      installWithinBound: installBound === null || t100 === null ? null : t100 <= installBound,
      completedBoundSeconds: installBound === null ? null : round(installBound + o.timeout + 2 * o.tick, 2),
      completedWithinBound: installBound === null ? null : (run.result.secondsToCompleted as number) <= installBound + o.timeout + 2 * o.tick,
      rssUnder1GiB: ((run.result.cloud as { peakRssMiB: number }).peakRssMiB) < 1024,
    };
    const entry = {
      devices: n,
      simWorkers: workers,
      storage: { dir: storage, realDisk: true },
      // Other work on the cores when the run began (1-min load average above 1; the run itself adds its own).
      loadedMachine: load0 > 1,
      loadAverage1m: { start: load0, end: loadAverage1m() },
      model: { bytes: rel.bytes.length, chunks: rel.chunks.length, chunkSize: CHUNK },
      publishConcurrency: PUBLISH_CONCURRENCY,
      connectConcurrencyPerWorker: CONNECT_CONCURRENCY,
      baselines: { subscribers: subs ?? null, engineless: eless ?? null },
      cloud: run.result,
      targets,
    };
    const name = process.env.BENCH_RESULT ?? 'fleet';
    const path = resolve('test/bench/results', `${name}.json`);
    let runs: Record<string, unknown> = {};
    try {
      runs = (JSON.parse(readFileSync(path, 'utf8')) as { runs?: Record<string, unknown> }).runs ?? {};
    } catch {
      runs = {};
    }
    runs[String(n)] = entry;
    const line = `fleet N=${n}: ${run.summary}; engine-less 100% ${elessT ?? '-'} s, subscribers 100% ${(subs?.seconds as { p100?: number } | undefined)?.p100 ?? '-'} s`;
    runs[String(n)] = { ...entry, summary: line };
    const file = writeBenchResult(name, { note: 'issue 8 "Proof at scale": runs by device count; see test/bench/fleet.bench.ts', runs, scaling: scalingOf(runs) });
    console.log(`${line} → ${file}`);
    if (!run.valid) process.exitCode = 1;
  } finally {
    await sys.close().catch(() => undefined);
    await broker.stop();
    if (process.env.BENCH_KEEP !== '1') await rm(dir, { recursive: true, force: true, maxRetries: 5 }).catch((err: unknown) => log(`cleanup of ${dir}: ${(err as Error).message}`));
  }
}

if (process.argv[2] === '--subs') {
  await subscribersChild(process.argv.slice(3));
} else {
  main().then(
    () => process.exit(process.exitCode ?? 0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
