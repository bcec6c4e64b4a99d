import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { ZodType } from 'zod';
import { formatIssues } from '../protocol/codec.js';
import { UsageError } from './errors.js';

/** Where the CLI looks for the admin token when `--token` / `--token-file` are not given. */
export const TOKEN_ENV = 'APPRENTICE_ADMIN_TOKEN';
export const TOKEN_FILE_ENV = 'APPRENTICE_ADMIN_TOKEN_FILE';

/** A request the cloud refused or could not be reached for. A UsageError: the CLI prints it on one line, exit 2. */
export class ApiError extends UsageError {
  override readonly name = 'ApiError';
  constructor(
    message: string,
    readonly status?: number,
    /** The API's `error.code`, when it sent one. */
    readonly code?: string,
  ) {
    super(message);
  }
}

export interface ApiClientOptions {
  /** Cloud API base URL, e.g. https://cloud.example.com:8787 */
  cloud: string;
  token: string;
  fetchImpl?: typeof fetch;
  timeoutMs?: number;
}

export interface ApiRequest<T> {
  /** JSON body (sent as application/json). */
  json?: unknown;
  /** Raw body (e.g. a file stream), with its content type. */
  body?: { data: NonNullable<RequestInit['body']>; contentType: string };
  query?: Record<string, string | number | undefined>;
  /** Validates the response; without it the parsed JSON is returned as is. */
  schema?: ZodType<T>;
}

/**
 * Resolves the admin token: `--token`, else `--token-file`, else $APPRENTICE_ADMIN_TOKEN, else the file
 * named by $APPRENTICE_ADMIN_TOKEN_FILE. A file keeps the token out of `ps` and shell history (the cloud
 * writes one to DATA/admin-token).
 */
export function resolveAdminToken(o: { token?: string; tokenFile?: string }, env: NodeJS.ProcessEnv = process.env): string {
  if (o.token) return o.token;
  const file = o.tokenFile ?? (env[TOKEN_ENV] ? undefined : env[TOKEN_FILE_ENV] || undefined);
  if (file !== undefined) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new UsageError(`${o.tokenFile !== undefined ? '--token-file' : `$${TOKEN_FILE_ENV}`}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    const token = text.trim();
    if (!token) throw new UsageError(`${file}: the token file is empty`);
    return token;
  }
  if (env[TOKEN_ENV]) return env[TOKEN_ENV];
  throw new UsageError(`--token is required (or --token-file, or set ${TOKEN_ENV} / ${TOKEN_FILE_ENV})`);
}

/** Adds `--cloud`, `--token` and `--token-file` to a command that talks to the admin API. */
export function addApiOptions(cmd: Command): Command {
  return cmd
    .requiredOption('--cloud <url>', 'cloud API base URL, e.g. http://127.0.0.1:8787')
    .option('--token <token>', `admin bearer token (default: $${TOKEN_ENV})`)
    .option('--token-file <file>', `file holding the admin token, e.g. DATA/admin-token (default: $${TOKEN_FILE_ENV})`);
}

/** The client for a command given `addApiOptions`' flags. */
export function apiClientFromFlags(o: { cloud: string; token?: string; tokenFile?: string }, { env = process.env, fetchImpl }: { env?: NodeJS.ProcessEnv; fetchImpl?: typeof fetch } = {}): ApiClient {
  return new ApiClient({ cloud: o.cloud, token: resolveAdminToken(o, env), fetchImpl });
}

/**
 * The admin API as the CLI sees it. Every failure is an ApiError with a one-line message: a bad base URL,
 * connection errors, HTTP errors (the API's `{ error: { code, message, field } }` shown as
 * `HTTP 409 device_exists: ...`), and a response the schema refuses.
 *
 * @example
 * const api = new ApiClient({ cloud: 'http://127.0.0.1:8787', token });
 * const rollout = await api.request('POST', 'v1/rollouts', { json: { model: 'mnist', releaseSeq: 7 } });
 */
export class ApiClient {
  private readonly base: URL;
  private readonly fetchImpl: typeof fetch;
  private readonly timeoutMs: number;

  constructor(private readonly o: ApiClientOptions) {
    let base: URL;
    try {
      base = new URL(o.cloud.endsWith('/') ? o.cloud : `${o.cloud}/`);
    } catch {
      throw new ApiError(`--cloud: not a URL: "${o.cloud}"`);
    }
    if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new ApiError(`--cloud: expected an http(s) URL, got "${o.cloud}"`);
    this.base = base;
    this.fetchImpl = o.fetchImpl ?? fetch;
    this.timeoutMs = o.timeoutMs ?? 30_000;
  }

  /** `path` is relative to the base URL (no leading slash), e.g. `v1/rollouts/ID`. */
  url(path: string, query?: ApiRequest<unknown>['query']): URL {
    const url = new URL(path.replace(/^\/+/, ''), this.base);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    return url;
  }

  async request<T = unknown>(method: string, path: string, req: ApiRequest<T> = {}): Promise<T> {
    const url = this.url(path, req.query);
    const headers: Record<string, string> = { authorization: `Bearer ${this.o.token}`, accept: 'application/json' };
    let body: RequestInit['body'];
    if (req.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(req.json);
    } else if (req.body) {
      headers['content-type'] = req.body.contentType;
      body = req.body.data;
    }
    let res: Response;
    try {
      // `duplex` is required by undici for a streamed request body.
      res = await this.fetchImpl(url, { method, headers, body, signal: AbortSignal.timeout(this.timeoutMs), ...(body !== undefined ? { duplex: 'half' } : {}) } as RequestInit);
    } catch (err) {
      const e = err as Error & { cause?: { code?: string; message?: string } };
      const why = e.name === 'TimeoutError' ? `no answer within ${this.timeoutMs} ms` : (e.cause?.code ?? e.cause?.message ?? e.message);
      throw new ApiError(`cannot reach ${url.origin}: ${why}`);
    }
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = text === '' ? undefined : JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    if (!res.ok) {
      const err = (parsed as { error?: { code?: string; message?: string; field?: string } } | undefined)?.error;
      const detail = err ? `${err.code ?? 'error'}: ${err.message ?? ''}${err.field ? ` (field ${err.field})` : ''}` : text.slice(0, 200).replace(/\s+/g, ' ');
      throw new ApiError(`HTTP ${res.status} from ${url.href}: ${detail}`, res.status, err?.code);
    }
    if (!req.schema) return parsed as T;
    const checked = req.schema.safeParse(parsed);
    if (!checked.success) throw new ApiError(`unexpected response from ${url.href}: ${parsed === undefined ? 'not JSON' : formatIssues(checked.error)}`);
    return checked.data;
  }
}
