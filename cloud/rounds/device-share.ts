import { and, asc, count, desc, eq, inArray, isNull, lte, ne, or, sql, type SQL } from 'drizzle-orm';
import type { StoreRegistry } from '../registry/open.js';

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
export async function selectHardRows(reg: StoreRegistry, model: string, window: number, share: number, devices?: readonly string[]): Promise<ShareRow[]> {
  if (devices?.length === 0) return [];
  const { examples: e } = reg.t;
  const eligible = and(eq(e.model, model), or(isNull(e.labelState), ne(e.labelState, 'quarantined')), devices === undefined ? undefined : inArray(e.deviceId, [...devices]));
  const counts = await reg.q.select({ device: e.deviceId, n: count() }).from(e).where(eligible).groupBy(e.deviceId);
  const alloc = waterFill(new Map(counts.map((c) => [c.device, c.n])), window, share);
  return newestPerDevice(reg, eligible, alloc, { order: 'newest' });
}

/**
 * The newest example rows of each device matching `where` (newest = ingested last, then id): `quota`
 * rows per device (a number for every device, or each device's own; devices not in the map get none).
 * `order`: all rows newest first, or grouped by device id, newest first within a device. Portable SQL
 * (a window function; a device's quota as a CASE, cast so PostgreSQL knows the parameters' type).
 */
export async function newestPerDevice(
  reg: StoreRegistry,
  where: SQL | undefined,
  quota: number | ReadonlyMap<string, number>,
  { order }: { order: 'newest' | 'device' },
): Promise<(ShareRow & { releaseSeq: number | null })[]> {
  const { examples: e } = reg.t;
  const devices = typeof quota === 'number' ? undefined : [...quota].filter(([, k]) => k > 0);
  if (devices?.length === 0 || (typeof quota === 'number' && quota < 1)) return [];
  const ranked = reg.q
    .select({
      id: e.id,
      deviceId: e.deviceId,
      input: e.input,
      label: e.label,
      reason: e.reason,
      labelState: e.labelState,
      sourceImage: e.sourceImage,
      teacherLogits: e.teacherLogits,
      teacherId: e.teacherId,
      releaseSeq: e.releaseSeq,
      at: e.ingestedAt,
      rank: sql<number>`row_number() over (partition by ${e.deviceId} order by ${e.ingestedAt} desc, ${e.id} desc)`.as('rank'),
    })
    .from(e)
    .where(and(where, devices ? inArray(e.deviceId, devices.map(([d]) => d)) : undefined))
    .as('ranked');
  const r = ranked;
  const limit = devices ? sql`case ${r.deviceId} ${sql.join(devices.map(([d, k]) => sql`when ${d} then cast(${k} as integer)`), sql` `)} else 0 end` : sql`cast(${Math.floor(quota as number)} as integer)`;
  const cols = { id: r.id, deviceId: r.deviceId, input: r.input, label: r.label, reason: r.reason, labelState: r.labelState, sourceImage: r.sourceImage, teacherLogits: r.teacherLogits, teacherId: r.teacherId, releaseSeq: r.releaseSeq };
  const byAge = [desc(r.at), desc(r.id)];
  return reg.q
    .select(cols)
    .from(ranked)
    .where(lte(r.rank, limit))
    .orderBy(...(order === 'device' ? [asc(r.deviceId), ...byAge] : byAge));
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
