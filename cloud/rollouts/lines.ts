import { eq } from 'drizzle-orm';
import { cohortForGroups, cohortSettingsOf, hasCohorts, type CohortSettings } from '../rounds/cohorts.js';
import type { DeviceRow } from '../registry/schema.js';
import { q, type Tables, type TxDb } from '../registry/tx.js';

/**
 * Release lines in rollouts (issue 13): a line is (model, cohort), cohort null for the base line. A
 * rollout of a release reaches only the devices of the release's line (the base line leaves cohort
 * members out; a cohort line takes only its members), supersedes only rollouts of the same line, and
 * a returning device converges only to its own line. So a device never flips between the base and its
 * cohort's student. Reads are transaction body steps (cloud/registry/tx.ts; run them with store.ts `run`).
 */

/** The cohort settings of `model` (none for an unknown model). */
export function* cohortSettingsOfModel(tx: TxDb, t: Tables, model: string) {
  const [row] = yield* q(tx.select({ distillSettings: t.models.distillSettings }).from(t.models).where(eq(t.models.name, model)).limit(1));
  return cohortSettingsOf(row?.distillSettings);
}

/** The line of a release: its cohort, or null (base line, also for an unknown release). */
export function* releaseCohort(tx: TxDb, t: Tables, seq: number) {
  const [row] = yield* q(tx.select({ cohort: t.releases.cohort }).from(t.releases).where(eq(t.releases.seq, seq)).limit(1));
  return row?.cohort ?? null;
}

/** Whether a device belongs to the line `cohort` of a model with these cohort settings. */
export function onLine(cs: CohortSettings, device: Pick<DeviceRow, 'groups'>, cohort: string | null): boolean {
  if (!hasCohorts(cs)) return cohort === null;
  return cohortForGroups(device.groups, cs) === cohort;
}

/** `devices` narrowed to the line of release `seq` of `model`. */
export function* devicesOnLine<D extends Pick<DeviceRow, 'groups'>>(tx: TxDb, t: Tables, model: string, seq: number, devices: readonly D[]) {
  const cs = yield* cohortSettingsOfModel(tx, t, model);
  const cohort = yield* releaseCohort(tx, t, seq);
  return devices.filter((d) => onLine(cs, d, cohort));
}
