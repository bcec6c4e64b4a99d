import { ApiClient } from '../../shared/cli/api-client.js';
import { provisionBundleSchema, type ProvisionBundle } from './bundle.js';

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
 * Calls `POST /v1/devices` and returns the validated config bundle. Every failure is an ApiError with a
 * one-line message (see ApiClient): unreachable cloud, HTTP errors, a response that is not a bundle.
 *
 * @example
 * const bundle = await provisionDevice({ cloud: 'http://127.0.0.1:8787', token, deviceId: 'pi-kitchen', groups: ['kitchen'] });
 */
export async function provisionDevice({ cloud, token, deviceId, groups = [], fetchImpl, timeoutMs }: ProvisionRequest): Promise<ProvisionBundle> {
  const api = new ApiClient({ cloud, token, fetchImpl, timeoutMs });
  return api.request('POST', 'v1/devices', { json: { id: deviceId, groups }, schema: provisionBundleSchema });
}
