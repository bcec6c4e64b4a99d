import { z } from 'zod';
import { KeyError, keyIdOf, loadPublicKey } from '../../shared/manifest/index.js';
import { deviceId, signedKeySetSchema } from '../../shared/protocol/index.js';
import { DEFAULT_OUTBOX_CONFIG, outboxConfigSchema } from '../outbox/index.js';
import { DEFAULT_SELECTION_CONFIG, selectionConfigSchema } from '../selection/index.js';

/**
 * The edge daemon's config file, `edge.json` (STYLE.md 3: versioned, validated once at start, defaults in
 * one object). The cloud's provisioning bundle `{ version, deviceId, mqtt: { url, username, password },
 * trustedKeys }` is a complete config on its own: everything else has a default below.
 */

export const EDGE_CONFIG_VERSION = 1;

/** Every default of the edge config, in one place (the selection and outbox defaults are their modules'). */
export const EDGE_DEFAULTS = {
  dataDir: '/var/lib/apprentice',
  telemetrySeconds: 30,
  /** Whether a `desired` without a signed assignment is refused; false for one release (older clouds send none). */
  requireAssignment: false,
  mqtt: {
    rejectUnauthorized: true,
    /** MQTT keepalive: the broker fires the last will after 1.5 × this without traffic ([MQTT-3.1.2-24]). */
    keepaliveSeconds: 30,
    /** Delay between reconnect attempts; the daemon retries forever. */
    reconnectMs: 5_000,
    connectTimeoutMs: 30_000,
    /** 3.1.1: what aedes (the embedded broker) speaks; 5 only behind this switch (DESIGN.md "MQTT"). */
    protocolVersion: 4 as 4 | 5,
    /**
     * The broker's maximum packet (Mosquitto `max_packet_size`/`message_size_limit`, AWS IoT 128 KiB):
     * the outbox refuses an example that could not fit one message, which would otherwise be retried
     * forever and block the queue (issue 9).
     */
    maxPacketBytes: 1024 * 1024,
  },
  api: {
    /**
     * Loopback by default. Another address needs `token` or `tokenFile` (Authorization: Bearer), or an
     * explicit `allowUnauthenticated: true` (issue 10).
     */
    bind: '127.0.0.1:8080',
    allowUnauthenticated: false,
    /** `/v1/feedback` labels accepted per minute (sliding window); over it: 429. Keeps a label flood off the outbox. */
    feedbackPerMinute: 60,
    /**
     * Requests in progress at once, at most; past it 503 with Retry-After (probes and /metrics exempt).
     * 64 is four times the 16 connections the edge bench drives; 0 turns the limit off.
     */
    maxConcurrent: 64,
    maxBodyBytes: 1024 * 1024,
    maxBatch: 256,
    /** Predictions kept for `/v1/feedback` (the API keeps their inputs in one preallocated ring); 0 = no feedback. */
    // 1,000 × (784 + 10) floats ≈ 3.2 MB, allocated at the first prediction: a twentieth of the daemon's
    // 64 MB anonymous-memory budget (issue 9); minutes of traffic on a device serving a few requests a second.
    rememberPredictions: 1_000,
    rememberSeconds: 3_600,
    microBatch: { enabled: false, maxBatch: 32, maxWaitMs: 0 },
  },
  runtime: {
    intraOpThreads: 1,
    /**
     * ORT's CPU arena and memory pattern, both off: together with MALLOC_ARENA_MAX=2 in the unit they
     * cut the daemon's anonymous RSS under load by ~10 MB (`npm run bench:edge`, issue 9); an mlp:64
     * run allocates little, so reusing blocks buys almost nothing.
     */
    memArena: false,
    memPattern: false,
    healthWindowSeconds: 60,
    /** The health window also closes early after this many runs; null = only the time bound. */
    healthWindowRequests: null as number | null,
    /** p95 run latency above this during the health window rolls the model back; null = no budget. */
    latencyBudgetMs: null as number | null,
    maxErrorRate: 0.05,
    minErrors: 3,
    /** NaN/Inf outputs roll back as a rate: at least this many, over more than maxNonFiniteRate of the runs. */
    maxNonFinite: 3,
    maxNonFiniteRate: 0.05,
    /** Runs before a bad rate may end the health window early. */
    minRequests: 20,
  },
  updates: {
    mqttIdleTimeoutMs: 60_000,
    httpIdleTimeoutMs: 30_000,
    retryInitialMs: 30_000,
    retryMaxMs: 15 * 60_000,
    /** A release more than this above the device's release floor is refused (`sequence_jump`; issue 10). */
    maxSequenceJump: 1_000_000,
  },
  /** Agent updates (issue 14; only under the launcher's agent layout). */
  agent: {
    /** A new agent version must be healthy (broker, model, /readyz, status) within this, else it is rolled back. */
    healthDeadlineSeconds: 120,
    /** Starts of a new version the launcher allows before rolling back (StartLimitBurst=5 must leave room). */
    maxAttempts: 2,
  },
  selection: DEFAULT_SELECTION_CONFIG,
  outbox: DEFAULT_OUTBOX_CONFIG,
} as const;

const D = EDGE_DEFAULTS;
const int = (min: number, max: number) => z.number().int().min(min).max(max);
const path = z.string().min(1, 'must not be empty');

/** `host:port`, IPv6 hosts in brackets (`[::1]:8080`); port 0 lets the OS pick one (tests). */
export const BIND_RE = /^(\[[0-9A-Fa-f:.]+\]|[^\s:[\]]+):(\d{1,5})$/;

/** Splits a validated `host:port` bind string; brackets are removed from an IPv6 host. */
export function parseBind(bind: string): { hostname: string; port: number } {
  const m = BIND_RE.exec(bind);
  if (!m) throw new RangeError(`invalid bind "${bind}" (expected host:port)`);
  return { hostname: m[1]!.replace(/^\[(.*)\]$/, '$1'), port: Number(m[2]) };
}

const bindSchema = z
  .string()
  .regex(BIND_RE, 'expected host:port (IPv6 as [addr]:port)')
  // zod runs every check even after the regex failed: only judge the port of a well-formed bind.
  .refine((s) => Number(BIND_RE.exec(s)?.[2] ?? 0) <= 65_535, 'port must be 0..65535');

const trustedKeySchema = z
  .strictObject({
    keyId: z.string().regex(/^[0-9a-f]{16}$/, 'expected a 16-hex-digit key id'),
    publicKeyPem: z.string().min(1),
  })
  .superRefine((k, ctx) => {
    // A provisioning mistake (id pasted next to the wrong PEM) is caught here, at start, not at the
    // first release, where it would look like an attack (`unknown_key`).
    try {
      const actual = keyIdOf(loadPublicKey(k.publicKeyPem));
      if (actual !== k.keyId) ctx.addIssue({ code: 'custom', path: ['keyId'], message: `does not match publicKeyPem (whose key id is ${actual})` });
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: ['publicKeyPem'], message: err instanceof KeyError ? err.message : 'not an Ed25519 public key PEM' });
    }
  });

const mqttSchema = z
  .strictObject({
    url: z.url({ protocol: /^(mqtts?|wss?|tcp|ssl)$/, error: 'expected an mqtt://, mqtts://, ws:// or wss:// URL' }),
    username: z.string().min(1).optional(),
    password: z.string().optional(),
    /** File holding the password (first line), for credentials kept out of edge.json. */
    passwordFile: path.optional(),
    caFile: path.optional(),
    certFile: path.optional(),
    keyFile: path.optional(),
    rejectUnauthorized: z.boolean().default(D.mqtt.rejectUnauthorized),
    keepaliveSeconds: int(0, 65_535).default(D.mqtt.keepaliveSeconds),
    reconnectMs: int(100, 3_600_000).default(D.mqtt.reconnectMs),
    connectTimeoutMs: int(1_000, 600_000).default(D.mqtt.connectTimeoutMs),
    protocolVersion: z.union([z.literal(4), z.literal(5)], { error: 'expected 4 (MQTT 3.1.1) or 5' }).default(D.mqtt.protocolVersion),
    // Below 16 KiB not even one MNIST example (≈ 4.3 KB) plus an envelope is a sensible limit; 256 MiB is MQTT's own.
    maxPacketBytes: int(16 * 1024, 268_435_455).default(D.mqtt.maxPacketBytes),
  })
  .superRefine((m, ctx) => {
    if (m.password !== undefined && m.passwordFile !== undefined) ctx.addIssue({ code: 'custom', path: ['passwordFile'], message: 'set password or passwordFile, not both' });
    if ((m.certFile === undefined) !== (m.keyFile === undefined)) {
      ctx.addIssue({ code: 'custom', path: [m.certFile === undefined ? 'certFile' : 'keyFile'], message: 'certFile and keyFile go together (TLS client certificate)' });
    }
  });

/** Loopback hosts: 127.0.0.0/8, ::1, localhost. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h) || h === '::ffff:127.0.0.1';
}

const apiSchema = z.strictObject({
  bind: bindSchema.default(D.api.bind),
  /** Bearer token every route but /healthz and /readyz then requires. At least 16 characters. */
  token: z.string().min(16, 'must be at least 16 characters').regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces').optional(),
  /** File holding the token (first line), for a token kept out of edge.json. */
  tokenFile: path.optional(),
  /** Serve a non-loopback bind without a token, deliberately. */
  allowUnauthenticated: z.boolean().default(D.api.allowUnauthenticated),
  feedbackPerMinute: int(0, 100_000).default(D.api.feedbackPerMinute),
  /** Requests in progress at once (0 = no limit); past it 503 + Retry-After, counted (refused_total{reason="busy"}). */
  maxConcurrent: int(0, 100_000).default(D.api.maxConcurrent),
  maxBodyBytes: int(1024, 64 * 1024 * 1024).default(D.api.maxBodyBytes),
  maxBatch: int(1, 4096).default(D.api.maxBatch),
  rememberPredictions: int(0, 1_000_000).default(D.api.rememberPredictions),
  rememberSeconds: z.number().min(0).max(7 * 86_400).default(D.api.rememberSeconds),
  /** Coalesce concurrent predictions into shared ORT runs (edge/runtime MicroBatcher); off by default. */
  microBatch: z
    .strictObject({
      enabled: z.boolean().default(D.api.microBatch.enabled),
      maxBatch: int(1, 4096).default(D.api.microBatch.maxBatch),
      maxWaitMs: z.number().min(0).max(1_000).default(D.api.microBatch.maxWaitMs),
    })
    .prefault({}),
}).superRefine((a, ctx) => {
  if (a.token !== undefined && a.tokenFile !== undefined) ctx.addIssue({ code: 'custom', path: ['tokenFile'], message: 'set token or tokenFile, not both' });
  const host = BIND_RE.exec(a.bind)?.[1];
  if (host !== undefined && !isLoopbackHost(host) && a.token === undefined && a.tokenFile === undefined && !a.allowUnauthenticated) {
    ctx.addIssue({ code: 'custom', path: ['bind'], message: `${a.bind} is not a loopback address: set api.token or api.tokenFile, or api.allowUnauthenticated: true to serve it without authentication` });
  }
});

const runtimeSchema = z.strictObject({
  /** ORT intra-op threads; 1 leaves the other core of a Pi to the HTTP API. */
  intraOpThreads: int(1, 64).default(D.runtime.intraOpThreads),
  /** ORT's CPU memory arena (faster runs; off trades speed for lower RSS). */
  memArena: z.boolean().default(D.runtime.memArena),
  /** ORT's memory pattern (a pre-planned block per input shape seen; off trades a little speed for RSS). */
  memPattern: z.boolean().default(D.runtime.memPattern),
  /** How long a newly switched model is watched by the health gate before it is committed. */
  healthWindowSeconds: z.number().min(0.1).max(86_400).default(D.runtime.healthWindowSeconds),
  healthWindowRequests: int(1, 10_000_000).nullable().default(D.runtime.healthWindowRequests),
  latencyBudgetMs: z.number().positive().max(600_000).nullable().default(D.runtime.latencyBudgetMs),
  maxErrorRate: z.number().min(0).max(1).default(D.runtime.maxErrorRate),
  minErrors: int(1, 1_000_000).default(D.runtime.minErrors),
  maxNonFinite: int(1, 1_000_000).default(D.runtime.maxNonFinite),
  maxNonFiniteRate: z.number().min(0).max(1).default(D.runtime.maxNonFiniteRate),
  minRequests: int(1, 10_000_000).default(D.runtime.minRequests),
});

const updatesSchema = z
  .strictObject({
    /** Give up on MQTT chunks when none arrived for this long (then retry with backoff). */
    mqttIdleTimeoutMs: int(1_000, 3_600_000).default(D.updates.mqttIdleTimeoutMs),
    httpIdleTimeoutMs: int(1_000, 3_600_000).default(D.updates.httpIdleTimeoutMs),
    retryInitialMs: int(100, 86_400_000).default(D.updates.retryInitialMs),
    retryMaxMs: int(100, 86_400_000).default(D.updates.retryMaxMs),
    maxSequenceJump: int(1, Number.MAX_SAFE_INTEGER).default(D.updates.maxSequenceJump),
  })
  .refine((u) => u.retryMaxMs >= u.retryInitialMs, { message: 'must be >= retryInitialMs', path: ['retryMaxMs'] });

const agentSchema = z.strictObject({
  healthDeadlineSeconds: int(1, 3_600).default(D.agent.healthDeadlineSeconds),
  // 3 at most: the switch's own restart + 3 attempts + the rollback start stay within StartLimitBurst=5.
  maxAttempts: int(1, 3).default(D.agent.maxAttempts),
});

export const edgeConfigSchema = z.strictObject({
  version: z.literal(EDGE_CONFIG_VERSION, { error: `unsupported config version (this daemon reads version ${EDGE_CONFIG_VERSION})` }),
  deviceId,
  mqtt: mqttSchema,
  /** Public keys releases may be signed with; more than one during a key rotation. */
  trustedKeys: z
    .array(trustedKeySchema)
    .min(1, 'at least one trusted key is required (from the provisioning bundle)')
    .superRefine((keys, ctx) => {
      const seen = new Set<string>();
      keys.forEach((k, i) => {
        if (seen.has(k.keyId)) ctx.addIssue({ code: 'custom', path: [i, 'keyId'], message: `duplicate key id ${k.keyId}` });
        seen.add(k.keyId);
      });
    }),
  /**
   * The offline root's public key, from a bundle of protocol revision 2+. Without it, the device
   * bootstraps its root from the first key set signed by one of `trustedKeys` (trust on first use:
   * README "Root of trust"); `rootKeyId` pins which root that may be.
   */
  rootKey: trustedKeySchema.optional(),
  rootKeyId: z.string().regex(/^[0-9a-f]{16}$/, 'expected a 16-hex-digit key id').optional(),
  /**
   * The cloud's root-signed key set at provisioning time (bundle of protocol revision 2+), or a file
   * holding one (`keysetFile`). Checked here for shape only; the daemon verifies it at start exactly like
   * one from `trust/keyset` (under `rootKey`, or as a bootstrap from `trustedKeys`), ignores it when it
   * is not newer than the key set it holds, and refuses to start when it does not verify.
   */
  keyset: signedKeySetSchema.optional(),
  keysetFile: path.optional(),
  /**
   * Refuse a `desired` that carries no signed assignment (issue 10). Off by default for one release,
   * while clouds older than the assignment are still about; turn it on once the cloud sends assignments.
   */
  requireAssignment: z.boolean().default(D.requireAssignment),
  /** Model slots, update state, outbox. */
  dataDir: path.default(D.dataDir),
  api: apiSchema.prefault({}),
  selection: selectionConfigSchema.prefault({}),
  outbox: outboxConfigSchema.prefault({}),
  runtime: runtimeSchema.prefault({}),
  updates: updatesSchema.prefault({}),
  agent: agentSchema.prefault({}),
  /** Heartbeat period on `devices/{id}/telemetry`. */
  telemetrySeconds: z.number().min(1).max(86_400).default(D.telemetrySeconds),
}).superRefine((c, ctx) => {
  if (c.keyset !== undefined && c.keysetFile !== undefined) ctx.addIssue({ code: 'custom', path: ['keysetFile'], message: 'set keyset or keysetFile, not both' });
});

export type EdgeConfig = z.infer<typeof edgeConfigSchema>;
export type EdgeConfigInput = z.input<typeof edgeConfigSchema>;
