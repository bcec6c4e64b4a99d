import { eq } from 'drizzle-orm';
import { cohortForGroups, cohortSettingsOf, hasCohorts, type CohortSettings } from '../rounds/cohorts.js';
import { models, releases, type DeviceRow } from '../registry/schema.js';
import type { Db } from './store.js';

/**
 * Release lines in rollouts (issue 13): a line is (model, cohort), cohort null for the base line. A
 * rollout of a release reaches only the devices of the release's line (the base line leaves cohort
 * members out; a cohort line takes only its members), supersedes only rollouts of the same line, and
 * a returning device converges only to its own line. So a device never flips between the base and its
 * cohort's student.
 */

/** The cohort settings of `model` (none for an unknown model). */
export function cohortSettingsOfModel(db: Db, model: string): CohortSettings {
  const row = db.select({ distillSettings: models.distillSettings }).from(models).where(eq(models.name, model)).get();
  return cohortSettingsOf(row?.distillSettings);
}

/** The line of a release: its cohort, or null (base line, also for an unknown release). */
export function releaseCohort(db: Db, seq: number): string | null {
  return db.select({ cohort: releases.cohort }).from(releases).where(eq(releases.seq, seq)).get()?.cohort ?? null;
}

/** Whether a device belongs to the line `cohort` of a model with these cohort settings. */
export function onLine(cs: CohortSettings, device: Pick<DeviceRow, 'groups'>, cohort: string | null): boolean {
  if (!hasCohorts(cs)) return cohort === null;
  return cohortForGroups(device.groups, cs) === cohort;
}

/** `devices` narrowed to the line of release `seq` of `model`. */
export function devicesOnLine<D extends Pick<DeviceRow, 'groups'>>(db: Db, model: string, seq: number, devices: readonly D[]): D[] {
  const cs = cohortSettingsOfModel(db, model);
  const cohort = releaseCohort(db, seq);
  return devices.filter((d) => onLine(cs, d, cohort));
}
