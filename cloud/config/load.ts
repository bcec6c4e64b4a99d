import { readFileSync } from 'node:fs';
import { formatIssues } from '../../shared/protocol/codec.js';
import { UsageError } from '../../shared/cli/errors.js';
import { cloudConfigSchema, type CloudConfig } from './schema.js';

/** Environment variables that override config-file fields (documented in the README). */
export const CLOUD_ENV: Record<string, string[]> = {
  APPRENTICE_DATA_DIR: ['dataDir'],
  APPRENTICE_REGISTRY_URL: ['registry', 'url'],
  APPRENTICE_API_BIND: ['api', 'bind'],
  APPRENTICE_ADMIN_TOKEN: ['api', 'adminToken'],
  APPRENTICE_PUBLIC_BASE_URL: ['api', 'publicBaseUrl'],
  APPRENTICE_MQTT_URL: ['mqtt', 'url'],
  APPRENTICE_MQTT_USERNAME: ['mqtt', 'username'],
  APPRENTICE_MQTT_PASSWORD: ['mqtt', 'password'],
  APPRENTICE_MQTT_CLIENT_ID: ['mqtt', 'clientId'],
  APPRENTICE_MQTT_PUBLIC_URL: ['mqtt', 'publicUrl'],
  APPRENTICE_MQTT_EMBEDDED_BIND: ['mqtt', 'embedded', 'bind'],
  APPRENTICE_MQTT_SHARED_SUBSCRIPTIONS: ['mqtt', 'sharedSubscriptions'],
  APPRENTICE_MQTT_SESSION_EXPIRY_SECONDS: ['mqtt', 'sessionExpirySeconds'],
  APPRENTICE_SIGNING_KEY_FILE: ['keys', 'signingKeyFile'],
  APPRENTICE_KEYS_MODE: ['keys', 'mode'],
  APPRENTICE_KEYS_SHARED_DIR: ['keys', 'sharedDir'],
  APPRENTICE_CLUSTER_ENABLED: ['cluster', 'enabled'],
  APPRENTICE_REPLICA_ID: ['cluster', 'replicaId'],
};

/** Env overrides read as booleans: `1`/`true` on, `0`/`false` off; anything else fails validation naming the field. */
const BOOLEAN_ENV = new Set(['APPRENTICE_MQTT_SHARED_SUBSCRIPTIONS', 'APPRENTICE_CLUSTER_ENABLED']);

/** Env overrides read as integers; anything else stays a string and fails validation naming the field. */
const INTEGER_ENV = new Set(['APPRENTICE_MQTT_SESSION_EXPIRY_SECONDS']);

function envInteger(v: string): number | string {
  return /^\d{1,12}$/.test(v) ? Number(v) : v;
}

function envBoolean(v: string): boolean | string {
  if (v === '1' || v === 'true') return true;
  if (v === '0' || v === 'false') return false;
  return v;
}

function setPath(obj: Record<string, unknown>, path: string[], value: unknown): void {
  let cur = obj;
  for (const k of path.slice(0, -1)) {
    if (typeof cur[k] !== 'object' || cur[k] === null) cur[k] = {};
    cur = cur[k] as Record<string, unknown>;
  }
  cur[path.at(-1)!] = value;
}

/**
 * Reads the config file (optional), applies env overrides, then CLI overrides, and validates once.
 * Errors are thrown as a UsageError with one `path: message` line per problem (exit code 2).
 */
export function loadCloudConfig({ file, env = process.env, overrides = {} }: { file?: string; env?: NodeJS.ProcessEnv; overrides?: Record<string, unknown> }): CloudConfig {
  let raw: Record<string, unknown> = {};
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new UsageError(`${file}: cannot read config (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new UsageError(`${file}: not valid JSON (${(err as Error).message})`);
    }
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new UsageError(`${file}: the config must be a JSON object`);
  }
  for (const [name, path] of Object.entries(CLOUD_ENV)) {
    const v = env[name];
    if (v === undefined || v === '') continue;
    setPath(raw, path, BOOLEAN_ENV.has(name) ? envBoolean(v) : INTEGER_ENV.has(name) ? envInteger(v) : v);
  }
  for (const [dotted, v] of Object.entries(overrides)) if (v !== undefined) setPath(raw, dotted.split('.'), v);
  const r = cloudConfigSchema.safeParse(raw);
  if (!r.success) throw new UsageError(`invalid cloud config${file ? ` (${file})` : ''}:\n${formatIssues(r.error).split('; ').join('\n')}`);
  return r.data;
}
