import { cohortOf } from './rounds/cohorts.js';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, unwatchFile, watchFile } from 'node:fs';
import { join, resolve } from 'node:path';
import { Counter, Registry as PromRegistry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from '../shared/log/index.js';
import { signAssignment, signManifest } from '../shared/manifest/index.js';
import type { Manifest } from '../shared/protocol/schemas.js';
import { createCloudApi, startCloudServer, type CloudServer } from './api/index.js';
import type { CloudConfig } from './config/schema.js';
import { embeddedBrokerAuth } from './fleet/broker-auth.js';
import { createReceiptSender } from './fleet/receipts.js';
import { startConsoleRetention } from './fleet/retention.js';
import { TelemetryHistory } from './fleet/telemetry-history.js';
import { reloadMosquittoAuth } from './provision/reload.js';
import { CloudMqtt, EmbeddedBroker, Ingest, IngestQuota, ReleasePublisher, deviceCompatOf } from './fleet/index.js';
import { reissueAgent } from './agents/release.js';
import { RolloutEngine } from './rollouts/index.js';
import { writeFileAtomicSync } from './keys/atomic.js';
// keys/store.js, not keys/index.js: the server must not even load the root-key admin commands.
import { readPublishedKeySet, keySetPath } from './keys/keyset-file.js';
import { setCurrentKeySetVersion } from './rollouts/keyset.js';
import { openCloudKeys } from './keys/cloud-keys.js';
import { UsageError } from '../shared/cli/errors.js';
import { keysMode, mqttSessionExpirySeconds } from './config/schema.js';
import { REGISTRY_BUSY_TIMEOUT_MS } from './registry/db.js';
import { openRegistry, type StoreRegistry } from './registry/open.js';
import { redactUrl } from './registry/pg.js';
import { reissueRelease, RoundRunner, Scheduler, signShadowManifest } from './rounds/index.js';
import { agreementGate, allGates, ShadowRollouts, teacherSwitchGate } from './shadow/index.js';
import { openModelTeacher } from './rounds/inputs.js';
import { publishRelease } from './rounds/publish.js';
import { RetentionJob } from './registry/retention-job.js';
import { openArtifacts } from './artifacts/index.js';
import { leaderService, Replica } from './cluster/replica.js';
import { fencedRegistry, leaderSlot } from './cluster/fenced-tx.js';
import { RevokedRetained } from './fleet/revocations.js';

export const CLOUD_MQTT_USER = 'apprentice-cloud';

export interface CloudService {
  apiUrl: string;
  brokerUrl: string;
  adminToken: string;
  dataDir: string;
  /** SQLite under the data dir, or PostgreSQL with registry.url (issue 15). */
  registry: StoreRegistry;
  rounds: RoundRunner;
  rollouts: RolloutEngine;
  ingest: Ingest;
  /** Example retention (background); `runOnce()` runs a pass now. */
  retention: RetentionJob;
  stop(): Promise<void>;
}

/** A secret kept in the data dir (0600) so restarts reuse it; generated on first start. */
function persistentSecret(file: string): string {
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const secret = randomBytes(24).toString('base64url');
  writeFileAtomicSync(file, secret + '\n', 0o600);
  return secret;
}

/**
 * The admin API token: from config (api.adminToken / APPRENTICE_ADMIN_TOKEN), or, for a single process with
 * local keys, generated once into DATA/admin-token. Replicas must agree on it, so with cluster.enabled or
 * shared keys it is never generated (the schema refuses such a config; checked again here).
 */
function adminTokenOf(cfg: CloudConfig, dataDir: string): string {
  if (cfg.api.adminToken !== undefined) return cfg.api.adminToken;
  if (cfg.cluster.enabled || keysMode(cfg) === 'shared') throw new UsageError('api.adminToken is required with cluster.enabled or shared keys (set APPRENTICE_ADMIN_TOKEN, the same on every replica)');
  return persistentSecret(join(dataDir, 'admin-token'));
}

/**
 * Fault drills only (test/e2e): `APPRENTICE_FAULT_KILL=before-commit:N` or `after-commit:N` SIGKILLs this
 * process at the Nth example commit, just before its transaction or just after it (before any PUBACK or
 * receipt): the ack window, made deterministic. Unset in production; a malformed value is ignored.
 */
function faultHooks(log: Logger): { beforeCommit?: () => void; afterCommit?: () => void } {
  const m = /^(before|after)-commit:(\d+)$/.exec(process.env.APPRENTICE_FAULT_KILL ?? '');
  if (!m) return {};
  const n = Number(m[2]);
  let commits = 0;
  const kill = (): void => void (++commits === n && process.kill(process.pid, 'SIGKILL'));
  log.warn({ fault: m[0] }, 'cloud/fault-hook armed: SIGKILL at an example commit');
  return m[1] === 'before' ? { beforeCommit: kill } : { afterCommit: kill };
}

function receiptCounter(metrics: PromRegistry): Counter<'result'> {
  return new Counter({ name: 'apprentice_cloud_receipts_total', help: 'Receipts by result (sent, not_capable: device did not declare receipts, failed: logged)', labelNames: ['result'] as const, registers: [metrics] });
}

function splitBind(bind: string): { host: string; port: number } {
  const i = bind.lastIndexOf(':');
  return { host: bind.slice(0, i), port: Number(bind.slice(i + 1)) };
}

/**
 * The cloud's composition root: registry → keys → broker (embedded or external) → MQTT client →
 * publisher → rollout engine ← ingest → round runner + scheduler → HTTP API. `stop()` tears down
 * in reverse order. Nothing here has side effects until `startCloud` is called.
 */
export async function startCloud(cfg: CloudConfig, { log }: { log: Logger }): Promise<CloudService> {
  const dataDir = resolve(cfg.dataDir);
  mkdirSync(dataDir, { recursive: true, mode: 0o750 });
  const stack: (() => Promise<void> | void)[] = [];
  const stop = async () => {
    for (const fn of stack.reverse()) {
      try {
        await fn();
      } catch (err) {
        log.error({ err }, 'cloud/stop');
      }
    }
    stack.length = 0;
  };
  try {
    // PostgreSQL with registry.url / APPRENTICE_REGISTRY_URL (several replicas), else SQLite under the data dir.
    const registry = cfg.registry.url
      ? await openRegistry({ url: cfg.registry.url, log: log.child({ module: 'registry' }) })
      : await openRegistry({ path: join(dataDir, 'registry.db'), busyTimeoutMs: REGISTRY_BUSY_TIMEOUT_MS });
    stack.push(() => registry.close());
    log.info({ dialect: registry.dialect, registry: cfg.registry.url ? redactUrl(cfg.registry.url) : join(dataDir, 'registry.db') }, 'cloud/registry open');
    // Shared mode (several replicas): keys and keyset.json from keys.sharedDir, never generated here.
    const { keys, trustDir, shared: sharedKeys } = openCloudKeys(cfg, dataDir);
    const active = keys.active();
    log.info({ keyId: active.keyId, trusted: keys.trusted().map((k) => k.keyId), shared: sharedKeys, trustDir, replica: cfg.cluster.replicaId, cluster: cfg.cluster.enabled }, 'cloud/keys ready');
    const adminToken = adminTokenOf(cfg, dataDir);
    const metrics = new PromRegistry();
    collectDefaultMetrics({ register: metrics });
    // Issue 15 item 4: with cluster.enabled only the elected leader runs the services started below by
    // replica.start, and its publishes are fenced on its epoch; without a cluster they all run here.
    const replica = new Replica({ ...(cfg.cluster.enabled && cfg.registry.url ? { clusterUrl: cfg.registry.url } : {}), holder: cfg.cluster.replicaId, log, metrics });
    // Release artifacts, teacher files, datasets: files under the data dir on SQLite, the registry on PostgreSQL (issue 15).
    const artifacts = openArtifacts({ registry, dataDir, log, metrics });
    // Chunks of registry puts that a crashed replica never finished (a day is far past any upload); nothing on SQLite.
    artifacts.sweep(new Date(Date.now() - 86_400_000)).catch((err: unknown) => log.warn({ err }, 'cloud/artifacts: sweeping unfinished puts failed'));

    let brokerUrl = cfg.mqtt.url;
    let username = cfg.mqtt.username;
    let password = cfg.mqtt.password;
    let broker: EmbeddedBroker | undefined;
    if (!brokerUrl) {
      const { host, port } = splitBind(cfg.mqtt.embedded.bind);
      username = CLOUD_MQTT_USER;
      password = persistentSecret(join(dataDir, 'mqtt-cloud-password'));
      broker = await EmbeddedBroker.create({ host, port, log, aedes: embeddedBrokerAuth({ registry, cloudUser: username, cloudPassword: password, log }) }).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'EADDRINUSE') throw new Error(`embedded MQTT broker: ${host}:${port} is in use (another broker?). Set mqtt.embedded.bind (APPRENTICE_MQTT_EMBEDDED_BIND) or point --mqtt-url at that broker`);
        throw err;
      });
      stack.push(() => broker!.stop());
      brokerUrl = broker.url;
    }
    if (cfg.cluster.enabled && cfg.mqtt.protocolVersion !== 5) {
      log.warn({ protocolVersion: cfg.mqtt.protocolVersion }, 'cloud/mqtt: on MQTT 3.1.1 the broker decides how long a dead replica keeps its share of device messages (Mosquitto persistent_client_expiration, default never); set mqtt.protocolVersion 5 for a session expiry of mqtt.sessionExpirySeconds');
    }
    // Constructed, not connected: Ingest registers its handlers first, so nothing the broker queued for
    // our persistent session arrives before its consumer (issue 9 "startup gap").
    const mqtt = new CloudMqtt({
      url: brokerUrl,
      // Each replica needs its own (the broker keeps one persistent session per client id).
      clientId: cfg.mqtt.clientId ?? `apprentice-cloud-${cfg.cluster.replicaId}`,
      username,
      password,
      sharedSubscriptions: !broker && cfg.mqtt.sharedSubscriptions,
      protocolVersion: cfg.mqtt.protocolVersion,
      // MQTT 5: a replica's session expires minutes after it died, so the $share group stops giving it messages.
      sessionExpirySeconds: mqttSessionExpirySeconds(cfg),
      log,
      metrics,
      ...(cfg.mqtt.caFile ? { clientOptions: { ca: readFileSync(cfg.mqtt.caFile) } } : {}),
    });
    // The MQTT session is persistent (clean=false): the broker keeps our subscriptions and queues device
    // messages while the cloud is down. So disconnect first, then stop Ingest: its unsubscribes must not
    // reach the broker, or examples sent while we are down would be dropped instead of queued.
    // Receipts (issue 9): the device deletes a row only on its receipt, sent after the commit.
    const receipts = createReceiptSender({ registry, mqtt, log, counter: receiptCounter(metrics) });
    const quota = new IngestQuota({ perMinute: cfg.ingest.examplesPerMinute, burst: cfg.ingest.burst, log, metrics });
    const ingest = new Ingest({ registry, mqtt, metrics, log, receipts, admit: quota.admit, ...faultHooks(log) });
    stack.push(async () => {
      await mqtt.dispose();
      await ingest.stop();
    });
    await ingest.start();
    // The console's data (issue 12): telemetry history in the batched writer's transactions, and retention.
    ingest.deviceState?.addSink(new TelemetryHistory().sink);
    await mqtt.start();
    const publisher = new ReleasePublisher({
      mqtt: replica.fencedMqtt(mqtt),
      dataDir,
      blobs: artifacts.blobs,
      log,
      compatOf: (id) => deviceCompatOf(registry, id),
      // The device's cohort for the model (issue 13): it refuses a manifest of any other line.
      assign: async (deviceId, model) => signAssignment({ deviceId, model, cohort: await cohortOf(registry, deviceId, model) }, keys.active().privateKeyPem),
    });
    // The root-signed key set (written by `keys publish-keyset`), retained on trust/keyset; again
    // when the file changes, and with the cloud info on every connect.
    const retainKeySet = (): void => {
      try {
        const ks = readPublishedKeySet(trustDir);
        if (!ks) return;
        // The unknown_key rule of rollouts compares each device's key-set version with this one.
        void setCurrentKeySetVersion(registry, ks.keyset.version).catch((err: unknown) => log.error({ err }, 'cloud/keyset-version-failed'));
        // The leader publishes (a follower's publish would be fenced); it watches the same shared file.
        if (replica.leads()) void publisher.publishKeySet(ks).catch((err: unknown) => log.error({ err }, 'cloud/publish-keyset-failed'));
      } catch (err) {
        log.error({ err }, 'cloud/keyset-unreadable');
      }
    };
    const advertise = (): void => {
      void publisher.publishCloudInfo().catch((err: unknown) => log.error({ err }, 'cloud/publish-info-failed'));
      retainKeySet();
    };
    watchFile(keySetPath(trustDir), { interval: 2_000, persistent: false }, retainKeySet);
    stack.push(() => unwatchFile(keySetPath(trustDir), retainKeySet));
    const signer = { sign: (m: Manifest) => signManifest(m, keys.active()) };
    // Started (as a leader service, below) after the connect: it republishes retained state; it rebuilds its
    // view from the registry, so signals emitted before it listens lose nothing. On a follower its API calls
    // only write the registry and the leader's tick acts on them.
    const rollouts = new RolloutEngine({
      registry,
      publisher,
      signals: ingest,
      log,
      metrics,
      tickSeconds: cfg.rollouts.tickSeconds,
      // The engine re-issues as the leader and passes its fenced view: a stale leader's re-issue inserts no row.
      reissue: async (prev, leaderReg) => reissueRelease(leaderReg, signer, prev),
      // Agent rollbacks (issue 14): the previous version signed again at a higher agentSeq.
      reissueAgent: async (agentSeq, leaderReg) => (await reissueAgent({ registry: leaderReg, key: keys.active(), agentSeq, now: new Date() })).agentSeq,
      leads: () => replica.leads(),
    });
    // On-device shadow runs (issue 13 item 4): their switch re-issues the candidate and starts a rollout.
    const shadowLog = log.child({ module: 'cloud/shadow' });
    // The switch's re-issue (the window's end on the leader's tick, or an operator's switch) writes through the
    // epoch the shadow service was started under, so a stale leader's switch inserts no release row. Without it
    // (a follower, or before the start) the view is the plain registry. A shadow start's signature (an API call,
    // on any replica) stays plain.
    const shadowSlot = leaderSlot(registry, 'shadow.reissue');
    const shadow = new ShadowRollouts({
      registry,
      publisher,
      signals: ingest,
      log: shadowLog,
      // The devices' own agreement, and the teacher's labels on the disagreements they sent (issue 13), its files
      // resolved through the artifact store like a round's (issue 15).
      gate: allGates(agreementGate, teacherSwitchGate({ registry, dataDir, blobs: artifacts.blobs, log: shadowLog, metrics, teacherOf: (model) => openModelTeacher(registry, artifacts.blobs, model, shadowLog) })),
      tickSeconds: cfg.rollouts.tickSeconds,
      signShadow: async (seq, until) => signShadowManifest(registry, signer, seq, until),
      reissue: async (seq) => reissueRelease(shadowSlot.registry, signer, seq),
      rollouts,
      // Issue 15: on a cluster the API's create / switch / abort only write the registry, and the leader's
      // shadow tick acts on them under its fenced writer; every replica records the devices' figures.
      clustered: replica.clustered,
      writer: (epoch) => replica.writer(registry, epoch),
    });
    if (replica.clustered) stack.push(shadow.listen());
    // Revoked devices' retained desired / agent, cleared by the leader (a follower's API only revokes the row).
    const revocations = new RevokedRetained({ registry, publisher, rollouts, writer: (epoch) => replica.writer(registry, epoch), log, metrics, tickSeconds: cfg.rollouts.tickSeconds });
    // The first CONNACK came before: every later one is a reconnect, after which the broker may have lost
    // retained state it had not saved yet (a crash). Put it back.
    const onReconnect = (): void => {
      if (!replica.leads()) return;
      advertise();
      void rollouts
        .republish()
        .then(() => shadow.republish())
        .catch((err: unknown) => log.error({ err }, 'cloud/republish-after-reconnect'));
    };
    mqtt.raw?.on('connect', onReconnect);
    stack.push(() => void mqtt.raw?.off('connect', onReconnect));
    const roundDeps = { registry, dataDir, blobs: artifacts.blobs, signer, publish: publisher, rollouts, log, options: { publicBaseUrl: cfg.api.publicBaseUrl, maxAttempts: cfg.rounds.maxAttempts, maxWallSeconds: cfg.rounds.maxWallSeconds } };
    // A replica queues rounds in the registry until it leads; one process recovers and runs them now.
    // On a cluster the leader's round writes, model claims, sequences and signatures are fenced on its epoch.
    const rounds = replica.clusterFence ? RoundRunner.follower({ ...roundDeps, cluster: { fence: replica.clusterFence, holder: cfg.cluster.replicaId } }) : await RoundRunner.create(roundDeps);
    stack.push(() => rounds.dispose());
    const scheduler = new Scheduler({ registry, rounds, log, tickMs: cfg.rounds.tickSeconds * 1000 });
    const retention = new RetentionJob({ registry, config: cfg.retention, log: log.child({ module: 'cloud/retention' }) });
    let consoleRetention: { stop(): void | Promise<void> } | undefined;
    // Stopped before the round runner, the MQTT client and the registry (the stack runs in reverse).
    stack.push(() => replica.stop());
    await replica.start([
      leaderService('advertise', advertise, () => undefined),
      // The leader's registry writes are fenced on the epoch it was elected under (a plain tx in one process).
      leaderService('rollouts', (epoch) => rollouts.start(replica.writer(registry, epoch)), () => rollouts.stop()),
      // The engine's start republished every device's normal desired: put the running shadow windows back.
      leaderService(
        'shadow',
        async (epoch) => {
          shadowSlot.lead(replica.writer(registry, epoch));
          shadow.start(epoch);
          await shadow.republish();
          // What an API call recorded and the old leader had not acted on yet (pending sends, switches, aborts).
          await shadow.tick().catch((err: unknown) => shadowLog.error({ err }, 'shadow/tick-failed'));
        },
        async () => {
          await shadow.stop();
          shadowSlot.follow();
        },
      ),
      leaderService('revocations', (epoch) => revocations.start(epoch), () => revocations.stop()),
      leaderService('rounds', (epoch) => rounds.lead(epoch), () => rounds.follow()),
      leaderService('scheduler', () => scheduler.start(), () => scheduler.stop()),
      leaderService('retention', (epoch) => retention.start(undefined, replica.writer(registry, epoch)), () => retention.stop()),
      leaderService(
        'console-retention',
        (epoch) => void (consoleRetention = startConsoleRetention({ registry: fencedRegistry(registry, replica.writer(registry, epoch), 'console-retention.delete'), log, eventRetentionDays: cfg.console.eventRetentionDays })),
        () => consoleRetention?.stop(),
      ),
    ]);

    const app = createCloudApi({
      registry,
      keys,
      adminToken,
      broker: { publicUrl: cfg.mqtt.publicUrl ?? brokerUrl },
      rounds,
      rollouts,
      replicaRole: () => replica.status(),
      shadow,
      fleet: {
        onDeviceProvisioned: (id, groups) => rollouts.onDeviceProvisioned(id, groups),
        onDeviceRevoked: async (id) => {
          // Revocation is not soft: the live session goes too (Mosquitto: password file + SIGHUP).
          broker?.disconnectDevice(id);
          if (!broker && cfg.mqtt.mosquitto) {
            try {
              await reloadMosquittoAuth(registry, cfg.mqtt.mosquitto, log);
            } catch (err) {
              log.error({ err, device: id }, 'cloud/mosquitto-reload-failed: run apprentice broker-auth and reload mosquitto by hand');
            }
          }
          // On a cluster the leader's sweep clears its retained messages (revocations.ts); now when this replica leads.
          if (replica.clustered) return revocations.kick();
          return rollouts.onDeviceRevoked(id);
        },
      },
      artifactsDir: dataDir,
      retention: cfg.retention,
      ingestCounts: () => ingest.deviceCounts(),
      artifacts: { store: artifacts.served, blobs: artifacts.blobs, trustedProxies: cfg.api.trustedProxies },
      trustDir,
      sharedKeys,
      onKeySetPublished: retainKeySet,
      console: { loginFailuresPerMinute: cfg.console.loginFailuresPerMinute },
      limits: { maxBodyBytes: cfg.api.maxBodyBytes, maxUploadBytes: cfg.api.maxUploadBytes, maxConcurrentUploads: cfg.api.maxConcurrentUploads },
      uploads: {
        publicBaseUrl: cfg.api.publicBaseUrl,
        metrics,
        publish: async (seq) => (await publishRelease({ registry, dataDir, blobs: artifacts.blobs, publish: publisher, rollouts, leads: () => replica.leads() }, 'upload', seq, () => {})).problems,
      },
      log,
    });
    const api = splitBind(cfg.api.bind);
    const server: CloudServer = await startCloudServer({ app, hostname: api.host, port: api.port, log });
    stack.push(() => server.stop());
    log.info({ api: server.url, broker: brokerUrl, embeddedBroker: !!broker, dataDir }, 'cloud/started');
    return { apiUrl: server.url, brokerUrl, adminToken, dataDir, registry, rounds, rollouts, ingest, retention, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
