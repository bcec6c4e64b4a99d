import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../updates/fsutil.js';

/**
 * The start-time marker, `<agent root>/marker` (issue 14). Written by the daemon before it switches
 * `current`, read and updated by the fixed launcher's ExecStartPre (deploy/apprentice-launcher.sh) at
 * every start, so it is plain `key=value` lines that POSIX sh parses without a JSON reader. The
 * launcher writes the same keys in the same format. Format version `v=1`; a newer `v` is refused.
 *
 *   state=pending      the switch to `pending` happened (or is happening); not yet healthy
 *   state=committed    `pending` passed its health commit; `previous` is the rollback target
 *   state=rolled_back  `current` was put back on `previous` (`reason` says why); `reported=1` once the
 *                      old version sent agent_rolled_back
 */
export const MARKER_FILE = 'marker';
export const MARKER_FORMAT = 1;
export const MARKER_STATES = ['pending', 'committed', 'rolled_back'] as const;
export type MarkerState = (typeof MARKER_STATES)[number];
export const ROLLBACK_REASONS = ['start_failed', 'health_timeout'] as const;

export interface Marker {
  state: MarkerState;
  /** The version switched to (its directory name under the agent root). */
  pending: string;
  /** The `current` link target before the switch (a version name or the installer's absolute path). */
  previous: string;
  /** The version string of `previous` (for events). */
  previousVersion: string;
  agentSeq: number;
  /** Starts of `pending` so far (the launcher counts them). */
  attempts: number;
  /** The launcher rolls back instead of a start once `attempts` reached this. */
  maxAttempts: number;
  /** Epoch seconds; the launcher rolls back a pending version still uncommitted after it. */
  deadline: number;
  reason?: (typeof ROLLBACK_REASONS)[number];
  reported: boolean;
}

export class MarkerError extends Error {
  override readonly name = 'MarkerError';
}

const VALUE_RE = /^[A-Za-z0-9._+/-]{1,1024}$/;

export function formatMarker(m: Marker): string {
  const lines = [`v=${MARKER_FORMAT}`, `state=${m.state}`, `pending=${m.pending}`, `previous=${m.previous}`, `previousVersion=${m.previousVersion}`, `agentSeq=${m.agentSeq}`, `attempts=${m.attempts}`, `maxAttempts=${m.maxAttempts}`, `deadline=${m.deadline}`, `reported=${m.reported ? 1 : 0}`];
  if (m.reason) lines.push(`reason=${m.reason}`);
  for (const l of lines) if (!VALUE_RE.test(l.slice(l.indexOf('=') + 1))) throw new MarkerError(`marker value not writable: ${l}`);
  return `${lines.join('\n')}\n`;
}

/** Parses marker text; throws MarkerError naming the first problem. */
export function parseMarker(text: string): Marker {
  const kv = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new MarkerError(`marker line without key=value: ${JSON.stringify(line.slice(0, 80))}`);
    kv.set(line.slice(0, eq), line.slice(eq + 1));
  }
  const str = (k: string): string => {
    const v = kv.get(k);
    if (v === undefined || !VALUE_RE.test(v)) throw new MarkerError(`marker: ${k} missing or invalid`);
    return v;
  };
  const int = (k: string): number => {
    const v = str(k);
    if (!/^\d{1,15}$/.test(v)) throw new MarkerError(`marker: ${k} is not a non-negative integer`);
    return Number(v);
  };
  const v = int('v');
  if (v !== MARKER_FORMAT) throw new MarkerError(`marker format v=${v} is not ${MARKER_FORMAT} (written by a newer agent?)`);
  const state = str('state');
  if (!(MARKER_STATES as readonly string[]).includes(state)) throw new MarkerError(`marker: unknown state ${state}`);
  const reason = kv.get('reason');
  if (reason !== undefined && !(ROLLBACK_REASONS as readonly string[]).includes(reason)) throw new MarkerError(`marker: unknown reason ${reason}`);
  return {
    state: state as MarkerState,
    pending: str('pending'),
    previous: str('previous'),
    previousVersion: str('previousVersion'),
    agentSeq: int('agentSeq'),
    attempts: int('attempts'),
    maxAttempts: int('maxAttempts'),
    deadline: int('deadline'),
    ...(reason ? { reason: reason as Marker['reason'] } : {}),
    reported: str('reported') === '1',
  };
}

export async function readMarker(root: string): Promise<Marker | null> {
  let text: string;
  try {
    text = await readFile(join(root, MARKER_FILE), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  return parseMarker(text);
}

export async function writeMarker(root: string, m: Marker): Promise<void> {
  await writeFileAtomic(join(root, MARKER_FILE), formatMarker(m));
}
