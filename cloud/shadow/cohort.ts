/**
 * The seam to cohorts (issue 13 item 1, built on another branch): which cohort a device belongs to for a
 * model, or null for the model's base line (every device in no cohort makes up one cohort). Shadow
 * evaluation groups devices with it; until cohorts land every device is on the base line.
 */
export type CohortOf = (deviceId: string) => string | null;

/** No cohorts: the whole base line is one cohort. */
export const baseLineOnly: CohortOf = () => null;

/** The key of a cohort in the signed manifest metrics (`shadow.<key>.…`). */
export const cohortKey = (cohort: string | null): string => cohort ?? 'base';
