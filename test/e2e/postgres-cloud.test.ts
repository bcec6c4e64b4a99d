/**
 * The cloud serving from PostgreSQL, end to end (issue 15): the real `apprentice cloud` process with
 * `registry.url` on a throwaway PostgreSQL database and a private Mosquitto, a real edge daemon provisioned
 * through the API, an uploaded release rolled out to it over MQTT (chunks read from the registry's artifact
 * store, not from a disk), hard examples ingested, and every row checked in PostgreSQL. Then the cloud process
 * is stopped and started again on a fresh, empty data dir: the state survives because it lives in the database.
 * Also: `apprentice backup` refuses a PostgreSQL registry (exit 2) and points to pg_dump.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { count, eq } from 'drizzle-orm';
import { connectAsync } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRegistry, type StoreRegistry } from '../../cloud/registry/open.js';
import { drillEdgeConfig, type ProvisionedDevice } from './fault-harness.js';
import { EdgeDaemon } from '../../edge/daemon.js';
import { generateSigningKey, sha256Of } from '../../shared/manifest/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { topics } from '../../shared/protocol/index.js';
import { denseModel } from '../fixtures/onnx-models.js';
import { freePort, skipWithoutMosquitto, startMosquitto, waitFor, type MosquittoBroker } from '../helpers/broker.js';
import { runCli } from '../helpers/cli.js';
import { spawnCloud, waitForCloudApi } from '../helpers/cloud-process.js';
import { clearRetained } from '../helpers/retained.js';
import { admin, databaseUrl, postgresSkipReason, throwawayName } from '../helpers/pg-throwaway.js';

const TOKEN = 'pg-e2e-admin-token-0123456789';
const MODEL = 'digits-pg';
const DEVICE = 'pg-dev-1';
/** The model, with its teacher and dataset files written under `dir` (on PostgreSQL registration imports them into the artifact store). */
function spec(dir: string) {
  writeFileSync(join(dir, 'teacher.onnx'), denseModel({ sizes: [784, 10], seed: 3 }).bytes);
  for (const f of ['base.csv', 'holdout.csv']) writeFileSync(join(dir, f), `label,${Array.from({ length: 784 }, (_, i) => `x${i}`).join(',')}\n1,${new Array(784).fill(0.5).join(',')}\n`);
  return {
    inputSpec: { shape: [784], dtype: 'float32', scaling: { scale: 1, offset: 0 } },
    labels: Array.from({ length: 10 }, (_, i) => `d${i}`),
    teacher: { files: [join(dir, 'teacher.onnx')], outputKind: 'logits' },
    studentSpec: 'mlp:16',
    distill: { temperature: 4, alpha: 0.9, epochs: 2, batchSize: 32, lr: 0.01, baseData: `csv:${join(dir, 'base.csv')}`, holdout: `csv:${join(dir, 'holdout.csv')}`, tolerance: 0.01 },
  };
}

const pgSkip = await postgresSkipReason('the PostgreSQL cloud e2e test');

interface CloudProcess {
  child: ChildProcess;
  api: string;
  stderr: () => string;
}

describe.skipIf(skipWithoutMosquitto() || pgSkip !== undefined)('the cloud on PostgreSQL, end to end (real process, Mosquitto, edge daemon)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'apprentice-pg-cloud-'));
  const dbName = throwawayName();
  const url = databaseUrl(dbName);
  let broker: MosquittoBroker;
  let cloud: CloudProcess | undefined;
  let daemon: EdgeDaemon | undefined;
  let reg: StoreRegistry | undefined;

  /** `apprentice cloud --config` as its own process on `dataDir`, the registry at `url`; resolves when /healthz answers. */
  async function startCloudProcess(dataDir: string): Promise<CloudProcess> {
    const port = await freePort();
    const file = join(dir, `cloud-${port}.json`);
    writeFileSync(
      file,
      JSON.stringify({
        dataDir,
        registry: { url },
        api: { bind: `127.0.0.1:${port}`, adminToken: TOKEN },
        mqtt: { url: broker.url },
        keys: { signingKeyFile: join(dir, 'signing-key.pem') },
        rounds: { tickSeconds: 3600 },
        rollouts: { tickSeconds: 0.3 },
      }),
    );
    const c = spawnCloud(file);
    const api = `http://127.0.0.1:${port}`;
    await waitForCloudApi(c, api);
    return { child: c.child, api, stderr: c.stderr };
  }

  async function stopCloudProcess(): Promise<void> {
    const c = cloud;
    cloud = undefined;
    if (!c || c.child.exitCode !== null || c.child.signalCode !== null) return;
    const exited = new Promise((r) => c.child.once('exit', r));
    c.child.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 20_000))]);
    if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
  }

  const call = async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Response> =>
    fetch(`${cloud!.api}${path}`, { method, headers: { authorization: `Bearer ${TOKEN}`, ...(body !== undefined && !(body instanceof Uint8Array) ? { 'content-type': 'application/json' } : {}), ...headers }, body: body === undefined ? undefined : body instanceof Uint8Array ? body : JSON.stringify(body) });

  const rows = async <T,>(f: (r: StoreRegistry) => Promise<T>): Promise<T> => f(reg!);
  const examplesOf = async (deviceId: string): Promise<number> => rows(async (r) => Number((await r.q.select({ n: count() }).from(r.t.examples).where(eq(r.t.examples.deviceId, deviceId)))[0]?.n ?? 0));

  /** Waits until the device selected `n` examples in all, its outbox is empty, and PostgreSQL holds exactly `n` of its examples. */
  async function drained(n: number, message: string): Promise<void> {
    const state = async () => {
      const { outbox, writer } = daemon!.snapshot();
      return { selected: outbox.selected, depth: outbox.depth + writer.pending, stored: await examplesOf(DEVICE) };
    };
    await waitFor(async () => {
      const s = await state();
      return s.selected === n && s.depth === 0 && s.stored >= n;
    }, 30_000, { intervalMs: 100, message }).catch(async (err: Error) => {
      throw new Error(`${err.message}: ${JSON.stringify(await state())}; cloud stderr: ${cloud?.stderr().slice(-2000)}`);
    });
    expect(await state()).toEqual({ selected: n, depth: 0, stored: n });
  }

  /** The retained message on `topic`, or undefined when the broker holds none (waits briefly for it). */
  async function retained(topic: string): Promise<Buffer | undefined> {
    const c = await connectAsync(broker.url, { clientId: `pg-e2e-probe-${++seed}`, clean: true, reconnectPeriod: 0, connectTimeout: 5000 });
    try {
      const got = new Promise<Buffer | undefined>((resolve) => {
        c.on('message', (t, payload, packet) => t === topic && packet.retain && resolve(payload.byteLength ? payload : undefined));
        setTimeout(() => resolve(undefined), 1_500);
      });
      await c.subscribeAsync(topic, { qos: 1 });
      return await got;
    } finally {
      await c.endAsync();
    }
  }

  let seed = 0;
  async function predict(n: number): Promise<void> {
    for (let i = 0; i < n; i++) {
      const s = ++seed;
      const input = Array.from({ length: 784 }, (_, j) => ((s * 7919 + j * 104729) % 256) / 255);
      const res = await fetch(`${daemon!.apiUrl}/v1/predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ input }) });
      expect(res.status).toBe(200);
      await res.arrayBuffer();
    }
  }

  beforeAll(async () => {
    writeFileSync(join(dir, 'signing-key.pem'), generateSigningKey().privateKeyPem, { mode: 0o600 });
    // An empty database: the cloud applies the PostgreSQL migrations itself at start.
    await admin(`CREATE DATABASE ${dbName}`);
    broker = await startMosquitto({ persistence: true, config: ['autosave_on_changes true'] });
  }, 60_000);

  afterAll(async () => {
    await daemon?.stop().catch(() => undefined);
    await stopCloudProcess();
    await reg?.close().catch(() => undefined);
    await broker?.stop().catch(() => undefined);
    await admin(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it('provisions, uploads, rolls out, ingests into PostgreSQL; a restart on an empty data dir keeps serving it all', async () => {
    const dataDir1 = join(dir, 'cloud-1');
    cloud = await startCloudProcess(dataDir1);
    reg = await openRegistry({ url, poolSize: 2 });
    expect(reg.dialect).toBe('postgres');
    expect(await (await fetch(`${cloud.api}/healthz`)).json()).toMatchObject({ status: 'ok' });

    // Provision a device through the API and run a real edge daemon with the bundle.
    const prov = await call('POST', '/v1/devices', { id: DEVICE });
    expect(prov.status).toBe(201);
    const edge = drillEdgeConfig((await prov.json()) as ProvisionedDevice, join(dir, 'device'));
    daemon = await EdgeDaemon.create(edge, { log: silentLogger, env: {} });
    await daemon.start();
    await waitFor(async () => rows(async (r) => (await r.q.select().from(r.t.devices).where(eq(r.t.devices.id, DEVICE)))[0]?.online === true), 20_000, { intervalMs: 100, message: 'device online in PostgreSQL' });

    // Upload a release: stored in the registry's artifact store, not under the data dir.
    const created = await call('PUT', `/v1/models/${MODEL}`, spec(dir));
    expect(created.status, await created.clone().text()).toBe(201);
    // Its teacher and dataset files were stored in the artifact store: the row names them by reference, not by this host's paths.
    const stored = (await created.clone().json()) as { teacher: { files: string[] }; distill: { baseData: string; holdout: string } };
    expect(stored.teacher.files).toEqual([expect.stringMatching(/^artifact:[0-9a-f]{64}$/)]);
    expect([stored.distill.baseData, stored.distill.holdout]).toEqual([expect.stringMatching(/^csv:artifact:[0-9a-f]{64}$/), expect.stringMatching(/^csv:artifact:[0-9a-f]{64}$/)]);
    const model = denseModel({ sizes: [784, 16, 10], seed: 7 });
    const up = await call('POST', `/v1/models/${MODEL}/releases`, model.bytes, { 'content-type': 'application/octet-stream' });
    expect(up.status, await up.clone().text()).toBe(201);
    const { seq, problems } = (await up.json()) as { seq: number; problems: string[] };
    // The upload's publish read the artifact back from PostgreSQL and retained its chunks.
    expect(problems).toEqual([]);
    const [rel] = await rows((r) => r.q.select().from(r.t.releases).where(eq(r.t.releases.seq, seq)));
    expect(rel).toMatchObject({ model: MODEL, sha256: sha256Of(model.bytes), bytes: model.bytes.byteLength });
    const [blob] = await rows((r) => r.q.select().from(r.t.artifactBlobs).where(eq(r.t.artifactBlobs.sha256, rel!.sha256)));
    expect(Number(blob!.bytes)).toBe(model.bytes.byteLength);
    const chunkSize = (rel!.manifest as { artifact: { chunkSize: number } }).artifact.chunkSize;
    const chunk0 = topics.artifactChunk(rel!.sha256, 0);
    expect(rel!.chunksPublished).toBe(true);
    expect(await retained(chunk0)).toEqual(Buffer.from(model.bytes.subarray(0, chunkSize)));
    const onDisk = join(dataDir1, 'artifacts');
    expect(existsSync(onDisk) ? readdirSync(onDisk) : []).toEqual([]);

    // Roll it out: the device downloads the chunks the cloud published from PostgreSQL, verifies and installs.
    const ro = await call('POST', '/v1/rollouts', { model: MODEL, release: seq, target: 'all', soakSeconds: 1 });
    expect(ro.status, await ro.clone().text()).toBe(201);
    const { id: rolloutId } = (await ro.json()) as { id: string };
    await waitFor(() => daemon!.snapshot().running?.release === seq, 60_000, { intervalMs: 100, message: `device on release ${seq}` });
    await waitFor(async () => rows(async (r) => (await r.q.select().from(r.t.rollouts).where(eq(r.t.rollouts.id, rolloutId)))[0]?.state === 'completed'), 60_000, { intervalMs: 200, message: 'rollout completed in PostgreSQL' });
    expect(await rows((r) => r.q.select().from(r.t.rolloutDevices).where(eq(r.t.rolloutDevices.rolloutId, rolloutId)))).toEqual([expect.objectContaining({ deviceId: DEVICE, state: 'installed' })]);

    // Ingest: every answered request is a hard example; the stored count in PostgreSQL equals what the device selected.
    await predict(12);
    await drained(12, 'examples stored in PostgreSQL');
    expect(await rows(async (r) => (await r.q.select().from(r.t.deviceEvents).where(eq(r.t.deviceEvents.deviceId, DEVICE))).map((e) => e.type))).toContain('installed');

    // Restart on a fresh, empty data dir: everything the cloud serves comes from PostgreSQL.
    // The retained chunks are gone too (a broker that lost them): the restarted cloud republishes them from PostgreSQL.
    await stopCloudProcess();
    await clearRetained(broker.url, [chunk0]);
    expect(await retained(chunk0)).toBeUndefined();
    const dataDir2 = join(dir, 'cloud-2');
    cloud = await startCloudProcess(dataDir2);
    await waitFor(async () => (await retained(chunk0))?.equals(Buffer.from(model.bytes.subarray(0, chunkSize))), 20_000, { intervalMs: 200, message: 'chunk 0 republished by the restarted cloud' });
    const devices = (await (await call('GET', '/v1/devices')).json()) as { devices: { id: string }[] };
    expect(devices.devices.map((d) => d.id)).toContain(DEVICE);
    expect(await (await call('GET', `/v1/rollouts/${rolloutId}`)).json()).toMatchObject({ id: rolloutId, state: 'completed' });
    const art = await call('GET', `/v1/releases/${seq}/artifact`);
    expect(art.status).toBe(200);
    expect(sha256Of(new Uint8Array(await art.arrayBuffer()))).toBe(rel!.sha256);
    const range = await call('GET', `/v1/releases/${seq}/artifact`, undefined, { range: 'bytes=100-199' });
    expect(range.status).toBe(206);
    expect(Buffer.from(await range.arrayBuffer())).toEqual(Buffer.from(model.bytes.subarray(100, 200)));
    expect(existsSync(join(dataDir2, 'artifacts')) ? readdirSync(join(dataDir2, 'artifacts')) : []).toEqual([]);

    // Ingest goes on through the restarted process; the device still runs the release.
    await predict(7);
    await drained(19, 'examples after the restart stored in PostgreSQL');
    expect(daemon.snapshot().running?.release).toBe(seq);

    // apprentice backup copies a SQLite data dir: on PostgreSQL it refuses and points to pg_dump.
    const backup = await runCli(['backup', '--data-dir', dataDir2, '--out', join(dir, 'backup')], { env: { APPRENTICE_REGISTRY_URL: url } });
    expect(backup.code).toBe(2);
    expect(backup.stderr).toMatch(/registry is on PostgreSQL .*pg_dump/);
    expect(existsSync(join(dir, 'backup'))).toBe(false);
  }, 240_000);
});
