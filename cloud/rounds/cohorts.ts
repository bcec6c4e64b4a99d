import { eq } from 'drizzle-orm';
import type { StoreRegistry } from '../registry/open.js';
import { distillSettingsFields, type DistillSettings } from './settings.js';

/**
 * Cohorts (issue 13 item 1): which devices a model's cohort students are for. The one definition of
 * "device → cohort", used by rounds (whose hard examples a cohort student trains on), rollouts (a
 * release line's targets) and the signed assignment (which cohort a device is told it is in).
 *
 * A model declares `cohorts: [{ name, group }]` or `perGroup: true` in its distill settings. A device
 * belongs to the first declared cohort whose group it is in; with `perGroup`, to the cohort named after
 * its first group. Devices in no cohort get the base line (cohort null).
 */

export type CohortSettings = Pick<DistillSettings, 'cohorts' | 'perGroup'>;
export interface Cohort {
  name: string;
  group: string;
}

const cohortFields = distillSettingsFields.pick({ cohorts: true, perGroup: true });

/** The cohort part of a stored `models.distill_settings`; a malformed one means no cohorts (the round refuses it with the reason). */
export function cohortSettingsOf(distillSettings: unknown): CohortSettings {
  const r = cohortFields.safeParse(distillSettings ?? {});
  return r.success ? r.data : { perGroup: false };
}

export function hasCohorts(s: CohortSettings): boolean {
  return s.perGroup || (s.cohorts?.length ?? 0) > 0;
}

/** The cohort of a device with these groups (a devices row's `groups`), or null for the base line. */
export function cohortForGroups(groups: unknown, s: CohortSettings): string | null {
  const g = Array.isArray(groups) ? groups.filter((x): x is string => typeof x === 'string') : [];
  if (s.perGroup) return g[0] ?? null;
  for (const c of s.cohorts ?? []) if (g.includes(c.group)) return c.name;
  return null;
}

/** The model's cohorts now: the declared ones, or with `perGroup` one per first group of a non-revoked device. */
export async function cohortsNow(reg: StoreRegistry, s: CohortSettings): Promise<Cohort[]> {
  if (!s.perGroup) return (s.cohorts ?? []).map((c) => ({ name: c.name, group: c.group }));
  const { devices } = reg.t;
  const rows = await reg.q.select({ groups: devices.groups }).from(devices).where(eq(devices.revoked, false));
  const names = new Set<string>();
  for (const r of rows) {
    const c = cohortForGroups(r.groups, s);
    if (c) names.add(c);
  }
  return [...names].sort().map((name) => ({ name, group: name }));
}

/** Non-revoked devices of one cohort (by the rule above), sorted by id. */
export async function cohortMembers(reg: StoreRegistry, s: CohortSettings, cohort: string): Promise<string[]> {
  const { devices } = reg.t;
  const rows = await reg.q.select({ id: devices.id, groups: devices.groups }).from(devices).where(eq(devices.revoked, false));
  return rows
    .filter((r) => cohortForGroups(r.groups, s) === cohort)
    .map((r) => r.id)
    .sort();
}

/**
 * The cohort `deviceId` is in for `model` (null: the base line, also for an unknown device or model).
 * What the cloud signs into the device's assignment (cloud/server.ts) and rollouts check targets by.
 */
export async function cohortOf(reg: StoreRegistry, deviceId: string, model: string): Promise<string | null> {
  const { devices, models } = reg.t;
  const [m] = await reg.q.select({ distillSettings: models.distillSettings }).from(models).where(eq(models.name, model)).limit(1);
  if (!m) return null;
  const s = cohortSettingsOf(m.distillSettings);
  if (!hasCohorts(s)) return null;
  const [d] = await reg.q.select({ groups: devices.groups }).from(devices).where(eq(devices.id, deviceId)).limit(1);
  return d ? cohortForGroups(d.groups, s) : null;
}

/**
 * The cohort of every non-revoked device under these settings, read once (for a round's shadow
 * evaluation, cloud/shadow/cohort.ts CohortOf): unknown devices are on the base line.
 */
export async function cohortLookup(reg: StoreRegistry, s: CohortSettings): Promise<(deviceId: string) => string | null> {
  if (!hasCohorts(s)) return () => null;
  const { devices } = reg.t;
  const rows = await reg.q.select({ id: devices.id, groups: devices.groups }).from(devices).where(eq(devices.revoked, false));
  const byId = new Map(rows.map((r) => [r.id, cohortForGroups(r.groups, s)]));
  return (id) => byId.get(id) ?? null;
}
