import { readFile } from 'node:fs/promises';
import type { z } from 'zod';
import { UsageError } from '../../shared/cli/errors.js';
import { applyEnv, setDotted } from './env.js';
import { edgeConfigSchema, type EdgeConfig } from './schema.js';

/**
 * An invalid edge config: one `path: message` line per issue. The CLI prints the lines and exits 2
 * (it is a UsageError, so `runProgram` maps it to 2 as well).
 */
export class ConfigError extends UsageError {
  override readonly name = 'ConfigError';
  constructor(readonly issues: readonly string[]) {
    super(issues.join('\n'));
  }
}

export interface LoadEdgeConfigOptions {
  /** `edge.json`; without it the config comes from the environment alone (containers). */
  file?: string;
  env?: NodeJS.ProcessEnv;
  /** Command-line overrides by dotted path (`dataDir`, `api.bind`); undefined values are ignored. */
  overrides?: Record<string, unknown>;
}

/** What the installer's template marks as "fill me in" (deploy/install-edge.sh). */
const PLACEHOLDER = 'CHANGE-ME';

function issueLines(error: z.ZodError, sources: Map<string, string>): string[] {
  return error.issues.map((i) => {
    const path = i.path.map(String).join('.');
    // The issue may sit below the overridden value (trustedKeys.0.keyId from APPRENTICE_TRUSTED_KEYS).
    const from = [...sources].find(([p]) => path === p || path.startsWith(`${p}.`))?.[1];
    // zod says "Invalid input: expected string, received undefined" for a missing field.
    const message = i.code === 'invalid_type' && /received undefined$/.test(i.message) ? 'required' : i.message;
    return `${path || '(root)'}${from ? ` (from ${from})` : ''}: ${message}`;
  });
}

function placeholders(value: unknown, path: string[] = []): string[] {
  if (typeof value === 'string') return value.includes(PLACEHOLDER) ? [`${path.join('.')}: still the installer's ${PLACEHOLDER} placeholder; set the real value`] : [];
  if (Array.isArray(value)) return value.flatMap((v, i) => placeholders(v, [...path, String(i)]));
  if (value && typeof value === 'object') return Object.entries(value).flatMap(([k, v]) => placeholders(v, [...path, k]));
  return [];
}

/**
 * Reads `edge.json`, applies the environment (see env.ts), then the command-line overrides, and
 * validates the result once. Throws ConfigError with every problem found.
 *
 * @example
 * const config = await loadEdgeConfig({ file: '/etc/apprentice/edge.json', overrides: { dataDir: opts.dataDir } });
 */
export async function loadEdgeConfig({ file, env = process.env, overrides = {} }: LoadEdgeConfigOptions = {}): Promise<EdgeConfig> {
  let raw: Record<string, unknown> = {};
  if (file !== undefined) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      throw new ConfigError([`${file}: cannot read the config file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`]);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new ConfigError([`${file}: not valid JSON (${(err as Error).message})`]);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ConfigError([`${file}: the config must be a JSON object`]);
    raw = parsed as Record<string, unknown>;
  } else {
    // Environment-only configs have no file to carry the version; they are written against this one.
    raw = { version: 1 };
  }
  const sources = applyEnv(raw, env);
  for (const [dotted, value] of Object.entries(overrides)) {
    if (value === undefined) continue;
    setDotted(raw, dotted, value);
    sources.set(dotted, 'the command line');
  }
  return parseEdgeConfig(raw, sources);
}

/** Validates an already assembled config object (tests, embedding). */
export function parseEdgeConfig(raw: unknown, sources: Map<string, string> = new Map()): EdgeConfig {
  const r = edgeConfigSchema.safeParse(raw);
  const issues = r.success ? [] : issueLines(r.error, sources);
  issues.push(...placeholders(raw).filter((line) => !issues.some((i) => i.split(':')[0] === line.split(':')[0])));
  if (issues.length > 0 || !r.success) throw new ConfigError(issues);
  return r.data;
}
