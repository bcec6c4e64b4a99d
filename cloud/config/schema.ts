import { hostname } from 'node:os';
import { z } from 'zod';
import { retentionConfigSchema } from '../registry/retention-job.js';

/** host:port with a 0..65535 port; port 0 asks the OS for a free one (tests, demo). */
const bind = z.string().regex(/^[^\s:]+:\d{1,5}$/, 'expected host:port').refine((s) => Number(s.split(':').pop()) <= 65535, 'port out of range');

/** A replica id: letters, digits, `_ . -`; 47 characters at most so `apprentice-cloud-<id>` is a valid client id. */
const replicaIdSchema = z.string().min(1).max(47).regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'expected letters, digits, _ . - (at most 47)');

/** The host name, cut to a valid replica id (`cloud-1.example.com` stays; odd characters become `-`). */
export function defaultReplicaId(): string {
  const id = hostname().replace(/[^A-Za-z0-9_.-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 47);
  return id === '' ? 'cloud' : id;
}

/**
 * The cloud's config file (`cloud.json`). Every field has a default, so `{}` (or no file at all) runs
 * a single-machine cloud: embedded aedes broker, API on 127.0.0.1:8787, data under ./.apprentice/cloud.
 */
/** Session expiry defaults (MQTT 5): one process keeps its session a week; a cluster replica 5 minutes. */
export const SINGLE_SESSION_EXPIRY_SECONDS = 7 * 24 * 3600;
export const CLUSTER_SESSION_EXPIRY_SECONDS = 300;
/** The largest session expiry accepted: 30 days. */
const SESSION_EXPIRY_MAX_SECONDS = 30 * 24 * 3600;

export const cloudConfigSchema = z.strictObject({
  version: z.literal(1).default(1),
  dataDir: z.string().min(1).default('.apprentice/cloud'),
  /** Where the registry lives: unset = SQLite at `<dataDir>/registry.db`; a URL = PostgreSQL (issue 15). */
  registry: z
    .strictObject({
      /** `postgres://user:password@host:5432/db` (or postgresql://); env APPRENTICE_REGISTRY_URL wins. */
      url: z
        .string()
        .regex(/^postgres(ql)?:\/\//, 'expected a postgres:// or postgresql:// URL')
        .refine((u) => URL.canParse(u), 'not a valid URL')
        .optional(),
    })
    .prefault({}),
  api: z
    .strictObject({
      bind: bind.default('127.0.0.1:8787'),
      /**
       * Bearer token for the admin API. Without one, a random token is generated once and kept in the data dir;
       * required (the same on every replica) when `cluster.enabled` or the keys are shared.
       */
      adminToken: z.string().min(16, 'must be at least 16 characters').optional(),
      /** Base URL devices use for HTTP artifact downloads; unset = MQTT chunks only. */
      publicBaseUrl: z.url().optional(),
      /**
       * Proxy addresses (exact IPs) whose `X-Forwarded-Proto: https` the artifact route believes.
       * Credentials over plain HTTP are refused from anyone else but loopback.
       */
      trustedProxies: z.array(z.union([z.ipv4(), z.ipv6()])).default([]),
      maxBodyBytes: z.number().int().min(1024).default(1 << 20),
      /** Size limit of an uploaded ONNX file (POST /v1/models/{name}/releases), separate from the JSON limit. */
      maxUploadBytes: z.number().int().min(1024).default(256 * 1024 * 1024),
      /** Uploads processed at once (each streams to disk, then loads the model in ORT); more get 503 + Retry-After. */
      maxConcurrentUploads: z.number().int().min(1).max(64).default(2),
    })
    .prefault({}),
  mqtt: z
    .strictObject({
      /** An external broker (Mosquitto, EMQX); unset = start the embedded aedes broker. */
      url: z.string().regex(/^(mqtt|mqtts|ws|wss):\/\//, 'expected mqtt://, mqtts://, ws:// or wss://').optional(),
      username: z.string().optional(),
      password: z.string().optional(),
      /**
       * The cloud's MQTT client id; default `apprentice-cloud-<cluster.replicaId>`. Each replica needs its own
       * (and, with Mosquitto's use_username_as_clientid, its own broker user). Must not be a device id.
       */
      clientId: z.string().min(1).max(64).regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'expected letters, digits, _ . -').optional(),
      caFile: z.string().optional(),
      embedded: z.strictObject({ bind: bind.default('127.0.0.1:1883') }).prefault({}),
      /** URL devices are told to use in their config bundle (defaults to the broker URL). */
      publicUrl: z.string().optional(),
      /** `$share/cloud/...` subscriptions (Mosquitto/EMQX); aedes has none. */
      sharedSubscriptions: z.boolean().default(false),
      protocolVersion: z.union([z.literal(4), z.literal(5)]).default(4),
      /**
       * MQTT 5 only: how long the broker keeps this cloud's session (its subscriptions and the device
       * messages queued for it) after a disconnect. Default (`mqttSessionExpirySeconds`): 7 days for one
       * process; 300 s with `cluster.enabled`, because a dead replica's session stays in the `$share` group
       * and the broker keeps giving it its turn of device messages until the session expires (README
       * "Running several replicas"). With MQTT 3.1.1 the broker decides (Mosquitto `persistent_client_expiration`).
       */
      sessionExpirySeconds: z
        .number()
        .int()
        .min(10)
        .max(SESSION_EXPIRY_MAX_SECONDS)
        .optional(),
      /**
       * With an external Mosquitto: revoking a device rewrites `authDir/passwd` and `authDir/acl` and
       * sends the broker (PID in `pidFile`) SIGHUP, which ends the device's live session.
       */
      mosquitto: z
        .strictObject({ authDir: z.string().min(1), pidFile: z.string().min(1), cloudUser: z.string().min(1).optional(), cloudPasswordFile: z.string().min(1).optional() })
        .optional(),
    })
    .prefault({}),
  ingest: z
    .strictObject({
      /**
       * Per-device rate cap on hard examples (issue 10): sustained examples per minute; 0 = no cap.
       * Examples over it are receipted `deferred` with a retry time, never refused.
       */
      examplesPerMinute: z.number().min(0).default(1200),
      /** Examples a device may send at once after a quiet spell. */
      burst: z.number().int().min(1).default(5000),
    })
    .prefault({}),
  keys: z
    .strictObject({
      /** PEM file of the active signing key; unset = generated under the data dir on first start. */
      signingKeyFile: z.string().optional(),
      /**
       * `local`: keys under DATA/keys, generated on first start. `shared`: every replica reads `sharedDir` (the
       * signing keys' index, their PEMs and keyset.json) and never writes it; a missing store stops the cloud
       * (exit 2) instead of generating keys. Default: `shared` when `sharedDir` is set or `cluster.enabled`.
       */
      mode: z.enum(['local', 'shared']).optional(),
      /** The shared key store (`apprentice keys init --keys-dir DIR`), e.g. a mounted secret. */
      sharedDir: z.string().min(1).optional(),
    })
    .prefault({}),
  /** Several replicas of the cloud (README "Running several replicas"). Off: one process, as before. */
  cluster: z
    .strictObject({
      /** This process is one of several replicas: keys must be shared, the admin token and an external broker configured. */
      enabled: z.boolean().default(false),
      /** This replica's name (logs, MQTT client id, leader election); default the host name. Unique per replica. */
      replicaId: replicaIdSchema.default(defaultReplicaId),
    })
    .prefault({}),
  rounds: z
    .strictObject({
      /** How often the scheduler checks each model's schedule. */
      tickSeconds: z.number().min(0.1).default(10),
      maxAttempts: z.number().int().min(1).default(2),
      /** Wall-clock limit of one round; a round past it is stopped and `failed` with that reason. 2 h. */
      maxWallSeconds: z.number().min(1).max(7 * 24 * 3600).default(7200),
    })
    .prefault({}),
  rollouts: z.strictObject({ tickSeconds: z.number().min(0.1).default(5) }).prefault({}),
  /** The web console at /ui/ and its data (README "Fleet console"). */
  console: z
    .strictObject({
      /** Device events (the console's event log, rollout notes) older than this are deleted. 90 days. */
      eventRetentionDays: z.number().int().min(1).max(3650).default(90),
      /** Wrong admin tokens per client address per minute before the login answers 429 with Retry-After. */
      loginFailuresPerMinute: z.number().int().min(1).max(1000).default(5),
    })
    .prefault({}),
  /** Example retention per model (README "Retention"). */
  retention: retentionConfigSchema.prefault({}),
}).superRefine((c, ctx) => {
  // What a replica needs must not come from its own disk (issue 15): shared keys, one admin token, one broker.
  const shared = keysMode(c) === 'shared';
  const why = c.cluster.enabled ? 'cluster.enabled' : 'keys.mode "shared"';
  if (shared && c.keys.sharedDir === undefined) ctx.addIssue({ code: 'custom', path: ['keys', 'sharedDir'], message: `required with ${why}: the directory every replica reads its signing keys from (APPRENTICE_KEYS_SHARED_DIR)` });
  if (c.cluster.enabled && c.keys.mode === 'local') ctx.addIssue({ code: 'custom', path: ['keys', 'mode'], message: 'must be "shared" with cluster.enabled: replicas must sign with the same keys' });
  if (shared && c.api.adminToken === undefined) ctx.addIssue({ code: 'custom', path: ['api', 'adminToken'], message: `required with ${why} (set api.adminToken or APPRENTICE_ADMIN_TOKEN, the same on every replica); it is never generated per data dir there` });
  if (c.cluster.enabled && c.registry.url === undefined) ctx.addIssue({ code: 'custom', path: ['registry', 'url'], message: 'required with cluster.enabled (APPRENTICE_REGISTRY_URL, a postgres:// URL): replicas elect their leader and fence its writes in PostgreSQL; on SQLite they cannot' });
  if (c.mqtt.sessionExpirySeconds !== undefined && c.mqtt.protocolVersion !== 5) ctx.addIssue({ code: 'custom', path: ['mqtt', 'sessionExpirySeconds'], message: 'needs mqtt.protocolVersion 5: MQTT 3.1.1 has no session expiry (the broker decides, e.g. Mosquitto persistent_client_expiration)' });
  if (c.cluster.enabled && c.mqtt.url === undefined) ctx.addIssue({ code: 'custom', path: ['mqtt', 'url'], message: 'required with cluster.enabled: every replica connects to the same external broker (the embedded one is per process)' });
  if (c.cluster.enabled && !c.mqtt.sharedSubscriptions) ctx.addIssue({ code: 'custom', path: ['mqtt', 'sharedSubscriptions'], message: 'must be true with cluster.enabled (APPRENTICE_MQTT_SHARED_SUBSCRIPTIONS=1): each device message must reach one replica, not every one' });
});
export type CloudConfig = z.infer<typeof cloudConfigSchema>;

/**
 * The MQTT 5 session expiry this cloud asks for (`mqtt.sessionExpirySeconds`, else the default): a replica's
 * session outlives it by a few minutes only, one process's by a week (device messages queue through an outage).
 */
export function mqttSessionExpirySeconds(c: { mqtt: { sessionExpirySeconds?: number | undefined }; cluster: { enabled: boolean } }): number {
  return c.mqtt.sessionExpirySeconds ?? (c.cluster.enabled ? CLUSTER_SESSION_EXPIRY_SECONDS : SINGLE_SESSION_EXPIRY_SECONDS);
}

/** Where the signing keys come from: the explicit `keys.mode`, else shared when a shared dir is given or in a cluster. */
export function keysMode(c: { keys: { mode?: 'local' | 'shared'; sharedDir?: string }; cluster: { enabled: boolean } }): 'local' | 'shared' {
  return c.keys.mode ?? (c.keys.sharedDir !== undefined || c.cluster.enabled ? 'shared' : 'local');
}
export type CloudConfigInput = z.input<typeof cloudConfigSchema>;
