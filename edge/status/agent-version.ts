import { readFileSync } from 'node:fs';
import { z } from 'zod';

/** What `status.agent` says when the installed bundle's package.json cannot be read. */
export const UNKNOWN_VERSION = '0.0.0-unknown';

const pkgSchema = z.object({ version: z.string().min(1).max(40).regex(/^[0-9A-Za-z.+-]+$/, 'invalid version') });

/**
 * The version of the installed bundle, from the package.json two levels above this module (repo root
 * or the lean edge bundle; the same relative place under `dist/`). Missing or malformed → UNKNOWN_VERSION
 * and `error` says why (the daemon still reports status; it only cannot name its version).
 *
 * @example
 * const { version } = readAgentVersion(); // '0.1.0'
 */
export function readAgentVersion(pkgUrl: URL = defaultPackageUrl()): { version: string; error?: string } {
  let text: string;
  try {
    text = readFileSync(pkgUrl, 'utf8');
  } catch (err) {
    return { version: UNKNOWN_VERSION, error: `cannot read ${pkgUrl.pathname}: ${(err as Error).message}` };
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { version: UNKNOWN_VERSION, error: `${pkgUrl.pathname} is not JSON` };
  }
  const r = pkgSchema.safeParse(parsed);
  return r.success ? { version: r.data.version } : { version: UNKNOWN_VERSION, error: `${pkgUrl.pathname} has no valid version` };
}

/** Source runs from edge/status/, the build from dist/edge/status/: walk up to the first package.json. */
function defaultPackageUrl(): URL {
  const here = new URL('.', import.meta.url);
  for (const up of ['../../package.json', '../../../package.json']) {
    const u = new URL(up, here);
    try {
      readFileSync(u);
      return u;
    } catch {
      /* try the next level */
    }
  }
  return new URL('../../package.json', here);
}

/** `linux-x64`, `linux-arm64`, ... */
export function agentPlatform(): string {
  return `${process.platform}-${process.arch}`;
}
