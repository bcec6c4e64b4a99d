import { sql } from 'drizzle-orm';
import type { Registry } from '../registry/db.js';

/**
 * Per-device share of a round's hard-example window (issue 10 item 5). Each device gets at most
 * `share` of the window; room the others cannot fill goes, evenly, to the devices that have more
 * (water-filling), so a one-device fleet still uses its whole window and one flooding device never
 * takes more than its share while others have examples.
 */

/**
 * How many examples each device gets. `available`: device → examples it has; `window`: the total room;
 * `share`: 0 < share ≤ 1. First every device is filled evenly up to min(available, share × window);
 * then the room left is filled evenly among the devices that have more. So a device gets more than its
 * share only when the others cannot fill the window. Deterministic: the last indivisible units go by
 * device id.
 *
 * @example waterFill(new Map([['a', 100], ['b', 3]]), 10, 0.25) // a → 7, b → 3
 */
export function waterFill(available: ReadonlyMap<string, number>, window: number, share: number): Map<string, number> {
  if (!(share > 0 && share <= 1)) throw new RangeError(`share must be in (0, 1], got ${share}`);
  const cap = Math.max(1, Math.floor(window * share));
  const alloc = new Map<string, number>([...available.keys()].map((d) => [d, 0]));
  const have = (d: string): number => Math.max(0, Math.floor(available.get(d)!));
  let room = Math.max(0, Math.floor(window));
  room = fill(alloc, (d) => Math.min(have(d), cap), room);
  fill(alloc, have, room);
  return alloc;
}

/** Raises every device evenly towards its bound until the room is used up; returns the room left. */
function fill(alloc: Map<string, number>, bound: (d: string) => number, room: number): number {
  let hungry = [...alloc.keys()].filter((d) => bound(d) > alloc.get(d)!).sort();
  while (room > 0 && hungry.length > 0) {
    const each = Math.floor(room / hungry.length);
    if (each === 0) {
      for (const d of hungry.slice(0, room)) alloc.set(d, alloc.get(d)! + 1);
      return 0;
    }
    const next: string[] = [];
    for (const d of hungry) {
      const give = Math.min(each, bound(d) - alloc.get(d)!);
      alloc.set(d, alloc.get(d)! + give);
      room -= give;
      if (bound(d) > alloc.get(d)!) next.push(d);
    }
    hungry = next;
  }
  return room;
}

export interface ShareRow {
  id: string;
  deviceId: string;
  input: Buffer;
  label: number | null;
  reason: string;
  labelState: 'ok' | 'quarantined' | 'accepted' | null;
  /** The re-encoded image the example came from (image models, issue 11), or null. */
  sourceImage: Buffer | null;
  teacherLogits: Buffer | null;
  teacherId: string | null;
}

/**
 * The model's newest hard examples within `window`, at most `share` of it per device (water-filled),
 * newest first. Quarantined labels are left out (they take no room). With `devices` (a cohort's
 * members, issue 13), only their examples count, and the window and the per-device share apply within
 * them: a one-device cohort fills the cohort's window with its own examples.
 */
export async function selectHardRows(registry: Registry, model: string, window: number, share: number, devices?: readonly string[]): Promise<ShareRow[]> {
  const only = devices === undefined ? sql`` : devices.length ? sql` AND device_id IN (${sql.join(devices.map((d) => sql`${d}`), sql`, `)})` : sql` AND 0`;
  const eligible = sql`model = ${model} AND (label_state IS NULL OR label_state <> 'quarantined')${only}`;
  const counts = registry.db.all<{ device: string; n: number }>(sql`SELECT device_id AS device, count(*) AS n FROM examples WHERE ${eligible} GROUP BY device_id`);
  const alloc = waterFill(new Map(counts.map((c) => [c.device, c.n])), window, share);
  const quota = JSON.stringify(Object.fromEntries(alloc));
  return registry.db.all<ShareRow>(sql`
    SELECT id, deviceId, input, label, reason, labelState, sourceImage, teacherLogits, teacherId FROM (
      SELECT id, device_id AS deviceId, input, label, reason, label_state AS labelState, source_image AS sourceImage, teacher_logits AS teacherLogits, teacher_id AS teacherId,
             ingested_at AS at, row_number() OVER (PARTITION BY device_id ORDER BY ingested_at DESC, id DESC) AS rank
      FROM examples WHERE ${eligible}
    ) WHERE rank <= coalesce(json_extract(${quota}, '$."' || deviceId || '"'), 0)
    ORDER BY at DESC, id DESC`);
}

/** Indices (into newest-first `deviceIds`) of the newest `n`, at most `share` of `n` per device, water-filled. */
export function shareIndices(deviceIds: readonly string[], n: number, share: number): number[] {
  const available = new Map<string, number>();
  for (const d of deviceIds) available.set(d, (available.get(d) ?? 0) + 1);
  const left = waterFill(available, n, share);
  const out: number[] = [];
  deviceIds.forEach((d, i) => {
    const k = left.get(d) ?? 0;
    if (k > 0) {
      out.push(i);
      left.set(d, k - 1);
    }
  });
  return out;
}
