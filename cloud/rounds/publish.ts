import { and, eq } from 'drizzle-orm';
import { q } from '../registry/tx.js';
import type { StoreRegistry } from '../registry/open.js';
import type { ReleaseRow } from '../registry/schema.js';
import { inTarget } from '../rollouts/policy.js';
import { cohortForGroups, cohortSettingsOf, cohortsNow, hasCohorts } from './cohorts.js';
import { parseRoundModel, type Schedule } from './settings.js';
import { readArtifact } from './store.js';
import type { ArtifactBlobs } from '../artifacts/types.js';
import type { ArtifactPublisher, RolloutStarter, RoundPhase } from './types.js';

export interface PublishDeps {
  registry: StoreRegistry;
  dataDir: string;
  /** The artifact store when it is the registry (PostgreSQL); undefined = files under dataDir. */
  blobs?: ArtifactBlobs;
  publish: ArtifactPublisher;
  rollouts: RolloutStarter;
  /**
   * False on a cluster follower (issue 15): its publishes would be fenced, so the chunks are left to the
   * leader (a rollout's first step publishes them) and only the rollout row is written. Default: always.
   */
  leads?: () => boolean;
  /**
   * The round runner's leader check (issue 15), called right before the automatic rollout is created; throws
   * when this replica's epoch is stale, and the rollout is left to the new leader (its recovery publishes the
   * release again). Default: nothing to check.
   */
  authorize?: (action: string) => Promise<void>;
}

/**
 * Steps 8–9 of a round, in the cloud process (MQTT lives there): publish the artifact's retained
 * chunks unless `releases.chunks_published` says it was done, then start a rollout when the model's
 * schedule says `autoRollout` and no rollout of this release exists yet. Both checks make it safe to
 * run again after a restart. Failures are returned, not thrown: the signed release stands either way.
 */
export async function publishRelease(
  deps: PublishDeps,
  roundId: string,
  seq: number,
  onPhase: (phase: RoundPhase, detail: string) => void,
): Promise<{ release: ReleaseRow; problems: string[] }> {
  const { q: db, t } = deps.registry;
  const { models, releases, rollouts } = t;
  const [rel] = await db.select().from(releases).where(eq(releases.seq, seq)).limit(1);
  if (!rel) throw new Error(`round ${roundId}: release ${seq} is not in the registry`);
  const problems: string[] = [];
  if (!rel.chunksPublished && (deps.leads?.() ?? true)) {
    onPhase('publish', `${rel.sha256.slice(0, 12)}… (${rel.bytes} bytes)`);
    try {
      const bytes = await readArtifact(deps.dataDir, rel.artifactPath, rel.sha256, deps.blobs);
      const chunkSize = (rel.manifest as { artifact?: { chunkSize?: number } }).artifact?.chunkSize ?? 128 * 1024;
      await deps.publish.publishArtifact(rel.sha256, bytes, chunkSize);
      // A transaction, so a runner's fenced registry view fences it (a stale leader sets no flag).
      await deps.registry.tx(function* (tx, t) {
        yield* q(tx.update(t.releases).set({ chunksPublished: true }).where(eq(t.releases.seq, seq)));
      });
    } catch (err) {
      problems.push(`publish failed: ${(err as Error).message}`);
    }
  }
  let schedule: Schedule | null = null;
  try {
    const [modelRow] = await db.select().from(models).where(eq(models.name, rel.model)).limit(1);
    schedule = modelRow ? parseRoundModel(modelRow).schedule : null;
  } catch (err) {
    problems.push(`no rollout: ${(err as Error).message}`);
  }
  const [hasRollout] = await db.select({ id: rollouts.id }).from(rollouts).where(and(eq(rollouts.kind, 'model'), eq(rollouts.releaseSeq, seq))).limit(1);
  // Never roll out bytes the devices cannot fetch over MQTT.
  if (schedule?.autoRollout && !hasRollout && problems.length === 0) {
    const target = await lineTarget(deps.registry, rel, schedule.rollout.target);
    if (target) {
      onPhase('rollout', `release ${seq}${rel.cohort ? ` to cohort ${rel.cohort}` : ''}`);
      try {
        await deps.authorize?.('round.rollout');
        await deps.rollouts.create({ model: rel.model, releaseSeq: seq, ...schedule.rollout, target });
      } catch (err) {
        problems.push(`rollout failed: ${(err as Error).message}`);
      }
    }
  }
  return { release: rel, problems };
}

/**
 * Where a release line's automatic rollout goes (issue 13): a cohort release to its cohort's group; the
 * base release to the schedule's target (the rollout engine leaves cohort members out). Undefined, and
 * no rollout, when the base line has no device left (every targeted device is in a cohort).
 */
async function lineTarget(registry: StoreRegistry, rel: ReleaseRow, target: Schedule['rollout']['target']): Promise<Schedule['rollout']['target'] | undefined> {
  const { devices, models } = registry.t;
  const [row] = await registry.q.select({ distillSettings: models.distillSettings }).from(models).where(eq(models.name, rel.model)).limit(1);
  const cs = cohortSettingsOf(row?.distillSettings);
  if (rel.cohort !== null) {
    const c = (await cohortsNow(registry, cs)).find((x) => x.name === rel.cohort);
    return c ? { kind: 'group', group: c.group } : undefined;
  }
  if (!hasCohorts(cs)) return target;
  const rows = await registry.q.select({ id: devices.id, groups: devices.groups }).from(devices).where(eq(devices.revoked, false));
  return rows.some((d) => inTarget(target, d) && cohortForGroups(d.groups, cs) === null) ? target : undefined;
}
