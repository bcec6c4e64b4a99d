import { readFile } from 'node:fs/promises';
import { ConfigError } from './load.js';
import type { EdgeConfig } from './schema.js';

/**
 * The local API's bearer token: `api.token`, or the first line of `api.tokenFile`, read once at start
 * so an unreadable or too short file is a config error (exit 2). Undefined when neither is set.
 */
export async function readApiToken(api: Pick<EdgeConfig['api'], 'token' | 'tokenFile'>): Promise<string | undefined> {
  if (api.token !== undefined) return api.token;
  if (api.tokenFile === undefined) return undefined;
  let text: string;
  try {
    text = await readFile(api.tokenFile, 'utf8');
  } catch (err) {
    throw new ConfigError([`api.tokenFile: cannot read ${api.tokenFile} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`]);
  }
  const token = text.split(/\r?\n/)[0]!.trim();
  if (token.length < 16 || !/^[\x21-\x7e]+$/.test(token)) throw new ConfigError([`api.tokenFile: ${api.tokenFile} must hold a token of at least 16 printable characters on its first line`]);
  return token;
}
