import type { z } from 'zod';
import { edgeConfigSchema } from './schema.js';

/**
 * Environment overrides for `edge.json`. Every field of the config can come from an environment
 * variable, named by one rule so the mapping cannot drift from the schema:
 *
 *   `APPRENTICE_` + the field's path, each camelCase segment in SCREAMING_SNAKE_CASE, joined by `_`.
 *
 * | field                         | variable                                   |
 * |-------------------------------|--------------------------------------------|
 * | deviceId                      | APPRENTICE_DEVICE_ID                       |
 * | mqtt.url / username / password| APPRENTICE_MQTT_URL / _USERNAME / _PASSWORD|
 * | mqtt.passwordFile             | APPRENTICE_MQTT_PASSWORD_FILE              |
 * | mqtt.protocolVersion          | APPRENTICE_MQTT_PROTOCOL_VERSION           |
 * | trustedKeys                   | APPRENTICE_TRUSTED_KEYS (JSON array)       |
 * | dataDir                       | APPRENTICE_DATA_DIR                        |
 * | api.bind                      | APPRENTICE_API_BIND                        |
 * | api.microBatch.enabled        | APPRENTICE_API_MICRO_BATCH_ENABLED         |
 * | selection.lowConfidence.threshold | APPRENTICE_SELECTION_LOW_CONFIDENCE_THRESHOLD |
 * | outbox.maxRows                | APPRENTICE_OUTBOX_MAX_ROWS                 |
 * | runtime.latencyBudgetMs       | APPRENTICE_RUNTIME_LATENCY_BUDGET_MS       |
 * | telemetrySeconds              | APPRENTICE_TELEMETRY_SECONDS               |
 *
 * (`apprentice edge --help` prints the full list.) String fields take the value as is; every other
 * field (numbers, booleans, `null`, arrays) takes JSON. An empty variable counts as unset. Precedence:
 * command-line flags > environment > file > defaults. `version` is file-only.
 */

export const ENV_PREFIX = 'APPRENTICE_';

export interface EnvEntry {
  /** e.g. `APPRENTICE_MQTT_URL` */
  name: string;
  /** e.g. `['mqtt', 'url']` */
  path: string[];
  /** `string`: taken verbatim; `json`: parsed as JSON (numbers, booleans, null, arrays). */
  kind: 'string' | 'json';
}

interface Def {
  type: string;
  innerType?: z.ZodType;
  in?: z.ZodType;
  shape?: Record<string, z.ZodType>;
  values?: unknown[];
}

const defOf = (s: z.ZodType): Def => (s as unknown as { _zod: { def: Def } })._zod.def;

/** Strips wrappers (default, optional, nullable, …) down to the schema that says what the value is. */
function unwrap(schema: z.ZodType): z.ZodType {
  let cur = schema;
  for (let i = 0; i < 32; i++) {
    const def = defOf(cur);
    if (['default', 'prefault', 'optional', 'nullable', 'readonly', 'catch', 'nonoptional'].includes(def.type) && def.innerType) cur = def.innerType;
    else if (def.type === 'pipe' && def.in) cur = def.in;
    else return cur;
  }
  return cur;
}

function isStringLeaf(schema: z.ZodType): boolean {
  const def = defOf(schema);
  if (def.type === 'string' || def.type === 'enum') return true;
  if (def.type === 'literal') return (def.values ?? []).every((v) => typeof v === 'string');
  return false;
}

const snake = (segment: string): string => segment.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();

/** The variable name for a config path. */
export function envName(path: readonly string[]): string {
  return ENV_PREFIX + path.map(snake).join('_');
}

function collect(schema: z.ZodType, path: string[], out: EnvEntry[]): void {
  const s = unwrap(schema);
  const def = defOf(s);
  if (def.type === 'object' && def.shape) {
    for (const [key, child] of Object.entries(def.shape)) collect(child, [...path, key], out);
    return;
  }
  out.push({ name: envName(path), path, kind: isStringLeaf(s) ? 'string' : 'json' });
}

function buildEntries(): EnvEntry[] {
  const out: EnvEntry[] = [];
  collect(edgeConfigSchema, [], out);
  return out.filter((e) => e.path.join('.') !== 'version');
}

/** Every variable the edge config reads, derived from the schema. */
export const EDGE_ENV: readonly EnvEntry[] = buildEntries();

function setPath(obj: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let cur = obj;
  for (const k of path.slice(0, -1)) {
    if (typeof cur[k] !== 'object' || cur[k] === null || Array.isArray(cur[k])) cur[k] = {};
    cur = cur[k] as Record<string, unknown>;
  }
  cur[path[path.length - 1]!] = value;
}

/**
 * Applies the environment to a parsed config object (in place). Returns which config paths came from
 * which variable, so validation errors can name the variable.
 */
export function applyEnv(raw: Record<string, unknown>, env: NodeJS.ProcessEnv): Map<string, string> {
  const sources = new Map<string, string>();
  for (const e of EDGE_ENV) {
    const v = env[e.name];
    if (v === undefined || v === '') continue;
    let value: unknown = v;
    if (e.kind === 'json') {
      try {
        value = JSON.parse(v);
      } catch {
        // Left as text: the schema then reports "expected number" (or similar) with the variable's name.
      }
    }
    setPath(raw, e.path, value);
    sources.set(e.path.join('.'), e.name);
  }
  return sources;
}

/** Sets a dotted path (`api.bind`) in a raw config object; for command-line overrides. */
export function setDotted(raw: Record<string, unknown>, dotted: string, value: unknown): void {
  setPath(raw, dotted.split('.'), value);
}

/** The mapping as help text, one `VARIABLE  field` line each. */
export function envHelp(): string {
  const width = Math.max(...EDGE_ENV.map((e) => e.name.length));
  return EDGE_ENV.map((e) => `  ${e.name.padEnd(width)}  ${e.path.join('.')}${e.kind === 'json' ? ' (JSON)' : ''}`).join('\n');
}
