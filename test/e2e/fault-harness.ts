/**
 * Fault-injection harness (issue 5 "Fault injection"): a private Mosquitto with persistence, the real
 * cloud (`startCloud` with `mqtt.url` pointing at it), real in-process edge daemons provisioned through
 * `POST /v1/devices`, and tiny signed releases inserted in the cloud's registry and rolled out by its
 * RolloutEngine. Every scenario ends with `assertConverged` and `assertNoExampleLost`.
 */
import type { ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { cloudConfigSchema, type CloudConfig } from '../../cloud/config/schema.js';
import { allocateReleaseSeqIn } from '../../cloud/rounds/releases.js';
import { runSync } from '../../cloud/registry/tx.js';
import { examples, models, releases, rollouts } from '../../cloud/registry/schema.js';
import { Registry } from '../../cloud/registry/db.js';
import { sqliteRegistry } from '../helpers/sqlite-registry.js';
import { startCloud, type CloudService } from '../../cloud/server.js';
import { parseEdgeConfig, type EdgeConfig } from '../../edge/config/index.js';
import { EdgeDaemon } from '../../edge/daemon.js';
import { Outbox, type OutboxStats } from '../../edge/outbox/index.js';
import { generateSigningKey, signManifest, type SigningKey } from '../../shared/manifest/index.js';
import { createLogger, silentLogger, type Logger } from '../../shared/log/index.js';
import { manifestSchema, type Manifest } from '../../shared/protocol/index.js';
import { makeRelease } from '../fixtures/edge-release.js';
import { freePort, startMosquitto, waitFor, type MosquittoBroker } from '../helpers/broker.js';
import { spawnCloud as spawnCloudChild, waitForCloudApi } from '../helpers/cloud-process.js';
import { DaemonProcess } from '../integration/edge/harness.js';

export const MODEL = 'mnist-student';
export const TOKEN = 'fault-admin-token-0123456789';
/** FAULTS_LOG=debug|info prints the cloud's and the daemons' logs (stderr) when a scenario needs a look. */
const LOG: Logger = process.env.FAULTS_LOG ? createLogger({ name: 'faults', level: process.env.FAULTS_LOG }) : silentLogger;

export interface ReleaseInfo {
  seq: number;
  sha256: string;
}

/** What `POST /v1/devices` answers that an edge config needs. */
export type ProvisionedDevice = { deviceId: string; mqtt: { url: string; username: string; password: string }; trustedKeys: { keyId: string; publicKeyPem: string }[] };

/** An edge config for a drill device (fast reconnects and receipts, every answered example sent) from its provisioning bundle. */
export function drillEdgeConfig(bundle: ProvisionedDevice, dataDir: string): EdgeConfig {
  return parseEdgeConfig({
    version: 1,
    deviceId: bundle.deviceId,
    mqtt: { ...bundle.mqtt, reconnectMs: 200, keepaliveSeconds: 5, connectTimeoutMs: 2_000 },
    trustedKeys: bundle.trustedKeys,
    dataDir,
    api: { bind: '127.0.0.1:0' },
    // Every answered example is a hard example: the proofs count them.
    selection: { audit: { rate: 1 }, lowConfidence: { enabled: false }, lowMargin: { enabled: false }, highEntropy: { enabled: false }, caps: { perMinute: null, perHour: null }, dedupe: { enabled: false } },
    // The adaptive receipt wait (3× observed latency, doubling per resend) is capped at 12 s: a drill on a
    // loaded CI machine must not wait out minutes-long field backoffs after each cloud kill.
    outbox: { ackTimeoutMs: 2_000, receiptTimeoutMs: 3_000, receiptTimeoutMaxMs: 12_000, connectJitterMs: 200, backoff: { initialMs: 100, maxMs: 1_000 }, batch: { maxExamples: 5 } },
    runtime: { healthWindowSeconds: 1 },
    updates: { mqttIdleTimeoutMs: 3_000, retryInitialMs: 300, retryMaxMs: 2_000 },
    telemetrySeconds: 1,
  });
}

export class FaultWorld {
  readonly dir = mkdtempSync(join(tmpdir(), 'apprentice-faults-'));
  readonly key: SigningKey = generateSigningKey();
  readonly cloudCfg: CloudConfig;
  cloud: CloudService | undefined;
  readonly daemons = new Map<string, EdgeDaemon>();
  readonly configs = new Map<string, EdgeConfig>();
  private predictions = 0;

  private constructor(readonly broker: MosquittoBroker) {
    const keyFile = join(this.dir, 'signing-key.pem');
    writeFileSync(keyFile, this.key.privateKeyPem, { mode: 0o600 });
    this.cloudCfg = cloudConfigSchema.parse({
      dataDir: join(this.dir, 'cloud'),
      api: { bind: '127.0.0.1:0', adminToken: TOKEN },
      mqtt: { url: broker.url },
      keys: { signingKeyFile: keyFile },
      rounds: { tickSeconds: 3600 },
      rollouts: { tickSeconds: 0.3 },
    });
  }

  /** `brokerConfig`: extra mosquitto.conf lines (queue limits for the overflow drill). */
  static async create({ brokerConfig = [] }: { brokerConfig?: string[] } = {}): Promise<FaultWorld> {
    // autosave_on_changes: a snapshot after every change, so a SIGKILL loses (almost) nothing the broker acknowledged.
    const broker = await startMosquitto({ persistence: true, config: ['autosave_on_changes true', ...brokerConfig] });
    const w = new FaultWorld(broker);
    await w.startCloud();
    return w;
  }

  get registry(): Registry {
    return sqliteRegistry(this.c.registry);
  }

  private get c(): CloudService {
    if (!this.cloud) throw new Error('the cloud is not running');
    return this.cloud;
  }

  /**
   * The cloud as its own process (`apprentice cloud --config cloud.json`, same data dir and broker), for
   * SIGKILL. The in-process cloud must be stopped first. Resolves once its API answers.
   */
  async spawnCloud(env: Record<string, string> = {}): Promise<{ child: ChildProcess; apiUrl: string; token: string }> {
    if (this.cloud) throw new Error('stop the in-process cloud first');
    const port = await freePort();
    const file = join(this.dir, 'cloud.json');
    writeFileSync(file, JSON.stringify({ ...this.cloudCfg, api: { ...this.cloudCfg.api, bind: `127.0.0.1:${port}` } }, null, 2));
    const c = spawnCloudChild(file, env);
    const apiUrl = `http://127.0.0.1:${port}`;
    await waitForCloudApi(c, apiUrl);
    return { child: c.child, apiUrl, token: TOKEN };
  }

  /** The registry file, opened by the test itself (while the cloud runs as another process). */
  openRegistry(): Registry {
    return Registry.open(join(this.cloudCfg.dataDir, 'registry.db'));
  }

  /** The in-process cloud; `dataDir` starts it on another data dir (a restored backup), same broker and keys file. */
  async startCloud({ dataDir }: { dataDir?: string } = {}): Promise<void> {
    if (this.cloud) return;
    const cfg = dataDir ? { ...this.cloudCfg, dataDir } : this.cloudCfg;
    this.cloud = await startCloud(cfg, { log: LOG.child({ side: 'cloud' }) });
  }

  async stopCloud(): Promise<void> {
    const c = this.cloud;
    this.cloud = undefined;
    await c?.stop();
  }

  /** A signed release of a tiny model in the registry (as a round stores one); `badSelfTest` makes it fail its self-test on devices. */
  addRelease({ seed, badSelfTest = false, sizes = [784, 16, 10], chunkSize = 16 * 1024, dataDir = this.cloudCfg.dataDir }: { seed: number; badSelfTest?: boolean; sizes?: number[]; chunkSize?: number; dataDir?: string }, registry: Registry = this.registry): ReleaseInfo {
    registry.db
      .insert(models)
      .values({ name: MODEL, inputSpec: { shape: [784], dtype: 'float32', scaling: { scale: 1 / 255, offset: 0 }, raw: 'uint8' }, labels: Array.from({ length: 10 }, (_, i) => `digit_${i}`), teacher: { files: [], outputKind: 'logits' }, studentSpec: 'mlp:16', distillSettings: {} })
      .onConflictDoNothing()
      .run();
    // Synchronous, as this harness's callers expect (SQLite only): the allocation body in better-sqlite3's own transaction.
    const seq = registry.db.transaction((tx) => runSync(tx, registry.t, allocateReleaseSeqIn), { behavior: 'immediate' });
    // By default ~50 KB (784→16→10) in 16 KiB chunks: 4 retained chunks.
    const rel = makeRelease(this.key, { release: seq, seed, sizes, chunkSize });
    let manifest: Manifest = rel.manifest;
    if (badSelfTest) manifest = manifestSchema.parse({ ...manifest, selfTest: { ...manifest.selfTest, expected: manifest.selfTest.expected.map((v) => v + 1) } });
    const signed = signManifest(manifest, this.key);
    const artifactPath = join('artifacts', `${rel.manifest.artifact.sha256}.onnx`);
    mkdirSync(join(dataDir, 'artifacts'), { recursive: true });
    writeFileSync(join(dataDir, artifactPath), rel.bytes);
    registry.db
      .insert(releases)
      .values({ model: MODEL, seq, sha256: rel.manifest.artifact.sha256, bytes: rel.bytes.length, quantization: 'fp32', metrics: manifest.metrics, manifest: signed.manifest, signature: signed.signature, parentSeq: null, artifactPath })
      .run();
    return { seq, sha256: rel.manifest.artifact.sha256 };
  }

  /** Starts a canary → fleet rollout of `seq` to all devices (one canary, short soak). */
  async rollout(seq: number, { canaryShare = 0.34, soakSeconds = 1 } = {}): Promise<string> {
    // Any failure rolls back (minFailures 1): these scenarios test the rollback path. An offline
    // canary is replaced after 2 s (issue 8), so scenario (c) does not wait the default 300 s.
    const r = await this.c.rollouts.create({ model: MODEL, releaseSeq: seq, target: { kind: 'all' }, canaryShare, soakSeconds, failureThreshold: 0, minFailures: 1, canaryGraceSeconds: 2 });
    return r.id;
  }

  rolloutRow(id: string) {
    return this.registry.db.select().from(rollouts).where(eq(rollouts.id, id)).get();
  }

  /** Provisions the device through the cloud API and writes its edge config (like `apprentice provision`). */
  async provision(id: string, { dataDir = join(this.dir, 'devices', id) }: { dataDir?: string } = {}): Promise<EdgeConfig> {
    const res = await fetch(`${this.c.apiUrl}/v1/devices`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ id }) });
    if (res.status !== 201) throw new Error(`provision ${id}: ${res.status} ${await res.text()}`);
    const config = drillEdgeConfig((await res.json()) as ProvisionedDevice, dataDir);
    this.configs.set(id, config);
    return config;
  }

  /** The device as its own process (`apprentice edge --config edge.json`), for kill -9. */
  async spawnDevice(id: string): Promise<DaemonProcess> {
    const config = this.configs.get(id) ?? (await this.provision(id));
    const file = join(this.dir, `${id}.edge.json`);
    writeFileSync(file, JSON.stringify(config, null, 2));
    const p = DaemonProcess.spawn(file);
    await p.started();
    return p;
  }

  /** Outbox counters of a device that is not running in this process (read from its outbox.db). */
  async outboxOf(id: string): Promise<OutboxStats> {
    const config = this.configs.get(id)!;
    const o = await Outbox.create({ path: join(config.dataDir, 'outbox.db'), maxRows: config.outbox.maxRows, maxBytes: config.outbox.maxBytes });
    try {
      return o.stats();
    } finally {
      o.dispose();
    }
  }

  async startDevice(id: string, opts: { dataDir?: string } = {}): Promise<EdgeDaemon> {
    const config = this.configs.get(id) ?? (await this.provision(id, opts));
    const d = await EdgeDaemon.create(config, { log: LOG.child({ device: id }), env: {} });
    await d.start();
    this.daemons.set(id, d);
    return d;
  }

  async stopDevice(id: string): Promise<void> {
    const d = this.daemons.get(id);
    this.daemons.delete(id);
    await d?.stop();
  }

  /** Sends `n` predictions (distinct inputs) to the device's local API; each one is selected. Returns how many were answered. */
  async predict(id: string, n: number): Promise<number> {
    const d = this.daemons.get(id);
    if (!d?.apiUrl) throw new Error(`device ${id} is not running`);
    let ok = 0;
    for (let i = 0; i < n; i++) {
      const seed = ++this.predictions;
      const input = Array.from({ length: 784 }, (_, j) => ((seed * 7919 + j * 104729) % 256) / 255);
      if ((await postFresh(`${d.apiUrl}/v1/predict`, JSON.stringify({ input }))) === 200) ok++;
    }
    return ok;
  }

  /** Every device runs release `seq` (by its own state and by the cloud's registry). */
  async waitConverged(seq: number, timeoutMs = 30_000): Promise<void> {
    const where = () => [...this.daemons].map(([id, d]) => `${id}=${d.snapshot().running?.release ?? 'none'}`).join(' ');
    await waitFor(() => [...this.daemons.values()].every((d) => d.snapshot().running?.release === seq), timeoutMs, { intervalMs: 100 }).catch(() => {
      throw new Error(`devices not on release ${seq} after ${timeoutMs} ms: ${where()}`);
    });
  }

  /** Hard examples: selected by the devices vs stored by the cloud, per device; waits for the outboxes to drain. */
  async waitNoExampleLost(timeoutMs = 30_000, { extraSelected = 0 } = {}): Promise<{ selected: number; stored: number }> {
    const count = () => {
      let selected = extraSelected;
      let depth = 0;
      let dropped = 0;
      for (const d of this.daemons.values()) {
        const { outbox: o, writer } = d.snapshot();
        // Examples lost to a failed disk write on the device (disk drills) never reached its outbox.
        selected += o.selected - o.lost;
        // Examples the writer has queued but not committed are not counted as selected yet.
        depth += o.depth + writer.pending;
        dropped += o.dropped + o.evicted;
      }
      const stored = this.registry.db.select({ id: examples.id }).from(examples).all().length;
      return { selected, depth, dropped, stored };
    };
    await waitFor(() => {
      const c = count();
      return c.depth === 0 && c.stored >= c.selected;
    }, timeoutMs, { intervalMs: 100 }).catch((err: unknown) => {
      throw new Error(`outboxes did not drain: ${JSON.stringify(count())}, cloud ingest ${JSON.stringify(this.c.ingest.stats())} (${(err as Error).message})`);
    });
    const c = count();
    return { selected: c.selected, stored: c.stored };
  }

  storedIds(): string[] {
    return this.registry.db.select({ id: examples.id }).from(examples).all().map((r) => r.id);
  }

  async dispose(): Promise<void> {
    for (const id of [...this.daemons.keys()]) await this.stopDevice(id).catch(() => undefined);
    await this.stopCloud().catch(() => undefined);
    await this.broker.stop().catch(() => undefined);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export const newUuid = randomUUID;

/**
 * POSTs JSON on a connection of its own (no keep-alive reuse). The cloud, the daemons and this client share
 * one event loop here, and a registry-lock drill blocks that loop for SQLite's busy timeout (5 s): the local
 * API's 5 s keep-alive timer can then close a pooled socket just as fetch writes its next request on it
 * (ECONNRESET). Separate processes on a device do not share that stall; a fresh connection keeps the drill
 * about what it tests. Resolves with the status code once the body has been read.
 */
function postFresh(url: string, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', agent: false, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}
