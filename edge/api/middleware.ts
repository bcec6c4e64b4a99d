import type { Context } from 'hono';
import { ApiError } from './errors.js';

// Shared with the cloud API; re-exported so the edge's routes keep importing them from here.
export { header, jsonOnly, limitBody } from '../../shared/http/middleware.js';

/** Reads and parses the JSON body; 400 `invalid_json` when it does not parse. */
export async function readJson(c: Context): Promise<unknown> {
  const text = await c.req.text();
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ApiError(400, 'invalid_json', `body is not valid JSON: ${(err as Error).message.slice(0, 200)}`);
  }
}
