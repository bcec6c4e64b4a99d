import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { SCHEMA_VERSION as OUTBOX_SCHEMA } from '../outbox/store.js';
import { writeFileAtomic } from '../updates/fsutil.js';
import { MARKER_FORMAT } from './marker.js';

/**
 * Data formats in the data dir, which survive agent updates and rollbacks untouched (issue 14). The
 * rule (README "Agent updates"): a newer agent may only change a format in a way the previous agent
 * can read, or it must keep a copy of the old file until its commit (the previous version is the
 * rollback target until then). Today no format differs between versions, so no copy exists yet; what
 * exists is this check: each format's version is recorded in `data-formats.json`, and a daemon that
 * finds a format newer than it knows refuses to start with one clear line instead of misreading it.
 * Each file also checks its own version (outbox `PRAGMA user_version`, `v` in the JSON files).
 */
export const DATA_FORMATS_FILE = 'data-formats.json';
export const DATA_FORMATS = {
  outbox: OUTBOX_SCHEMA,
  updateState: 1,
  timeFloor: 1,
  trust: 1,
  agentMarker: MARKER_FORMAT,
  agentState: 1,
} as const;

export class DataFormatError extends Error {
  override readonly name = 'DataFormatError';
}

const fileSchema = z.strictObject({ v: z.literal(1), formats: z.record(z.string().max(64), z.number().int().min(0).max(1_000_000)) });

/**
 * Refuses (DataFormatError) when the data dir holds a format newer than this build; otherwise records
 * this build's formats, except on a trial start (`record: false`): until the commit, the previous
 * version must still find what it knows.
 */
export async function checkDataFormats(dataDir: string, { record }: { record: boolean }): Promise<Record<string, number>> {
  const path = join(dataDir, DATA_FORMATS_FILE);
  let found: Record<string, number> = {};
  try {
    const r = fileSchema.safeParse(JSON.parse(await readFile(path, 'utf8')));
    if (!r.success) throw new DataFormatError(`${path}: not a data format record written by any version of this daemon`);
    found = r.data.formats;
  } catch (err) {
    if (err instanceof DataFormatError) throw err;
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new DataFormatError(`${path}: ${(err as Error).message}`);
  }
  const known = DATA_FORMATS as Record<string, number>;
  const newer = Object.entries(found).filter(([k, v]) => known[k] === undefined || v > known[k]!);
  if (newer.length) throw new DataFormatError(`${path}: data written by a newer agent (${newer.map(([k, v]) => `${k} ${v}${known[k] === undefined ? ' unknown' : ` > ${known[k]}`}`).join(', ')}); refusing to run on it`);
  const merged = { ...found, ...known };
  if (record && JSON.stringify(merged) !== JSON.stringify(found)) await writeFileAtomic(path, `${JSON.stringify({ v: 1, formats: merged })}\n`);
  return merged;
}
