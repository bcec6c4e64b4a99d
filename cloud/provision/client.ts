import { UsageError } from '../../shared/cli/errors.js';
import { formatIssues } from '../../shared/protocol/codec.js';
import { provisionBundleSchema, type ProvisionBundle } from './bundle.js';

/** A provisioning request the cloud refused or could not be reached for. CLI exit code 2. */
export class ProvisionError extends UsageError {
  override readonly name = 'ProvisionError';
  constructor(message: string, readonly status?: number) {
    super(message);
  }
}

export interface ProvisionRequest {
  /** Cloud API base URL, e.g. https://cloud.example.com:8787 */
  cloud: string;
  token: string;
  deviceId: string;
  groups?: string[];
  fetchImpl?: typeof fetch;
  timeoutMs?: number;
}

/**
 * Calls `POST /v1/devices` and returns the validated config bundle. Every failure is a ProvisionError with
 * a one-line message: connection errors, HTTP errors (the API's `{ error: { code, message, field } }`
 * shown as `HTTP 409 device_exists: ...`), and a response that is not a bundle.
 *
 * @example
 * const bundle = await provisionDevice({ cloud: 'http://127.0.0.1:8787', token, deviceId: 'pi-kitchen', groups: ['kitchen'] });
 */
export async function provisionDevice({ cloud, token, deviceId, groups = [], fetchImpl = fetch, timeoutMs = 30_000 }: ProvisionRequest): Promise<ProvisionBundle> {
  let url: URL;
  try {
    url = new URL('v1/devices', cloud.endsWith('/') ? cloud : `${cloud}/`);
  } catch {
    throw new ProvisionError(`--cloud: not a URL: "${cloud}"`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ProvisionError(`--cloud: expected an http(s) URL, got "${cloud}"`);
  let res: Response;
  try {
    res = await fetchImpl(url, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ id: deviceId, groups }),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    const e = err as Error & { cause?: { code?: string; message?: string } };
    const why = e.cause?.code ?? e.cause?.message ?? e.message;
    throw new ProvisionError(`cannot reach ${url.origin}: ${why}`);
  }
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  if (!res.ok) {
    const err = (body as { error?: { code?: string; message?: string; field?: string } } | undefined)?.error;
    const detail = err ? `${err.code ?? 'error'}: ${err.message ?? ''}${err.field ? ` (field ${err.field})` : ''}` : text.slice(0, 200).replace(/\s+/g, ' ');
    throw new ProvisionError(`HTTP ${res.status} from ${url.href}: ${detail}`, res.status);
  }
  const parsed = provisionBundleSchema.safeParse(body);
  if (!parsed.success) throw new ProvisionError(`unexpected response from ${url.href}: ${body === undefined ? 'not JSON' : formatIssues(parsed.error)}`);
  return parsed.data;
}
