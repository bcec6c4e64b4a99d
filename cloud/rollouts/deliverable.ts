import { and, desc, eq, isNull, lt, ne, or, sql, type SQL } from 'drizzle-orm';
import { ensureAgentChunks } from '../agents/delivery.js';
import { signedAgentOf } from '../agents/manifest.js';
import { signedManifestOf, type ReleasePublisher } from '../fleet/publisher.js';
import type { StoreRegistry } from '../registry/open.js';
import type { DeviceRow, RolloutRow } from '../registry/schema.js';
import { q, type Tables, type TxDb } from '../registry/tx.js';
import { DEVICE_CAPABILITIES } from '../../shared/protocol/compat.js';
import { RolloutError } from './policy.js';

/** `status.agent` of a daemon running agent `version` (edge/status/status.ts). */
export const agentStatusOf = (version: string): string => `apprentice-edge/${version}`;

/** One release as the rollout steps hand it out, whatever it ships (a model, or the agent itself). */
export interface DeliveryItem {
  seq: number;
  sha256: string;
  /** The release a rollback or a quarantine puts back, or null when there is none. */
  parent: number | null;
  /** Its artifact's retained chunks are on the broker. */
  ensure(): Promise<void>;
  /** Retains it for the device (desired or agent topic); throws IncompatibleReleaseError / AgentIncompatibleError sending nothing. */
  publish(deviceId: string): Promise<void>;
}

/**
 * What the rollout engine needs to know about what a rollout ships (issue 14): model releases go to
 * `desired` and `devices.desired_seq`; agent releases to `devices/{id}/agent` and
 * `devices.desired_agent_seq`. Waves, timeouts, quarantine, pause, abort and rollback are the same.
 * `desiredOf`, `setDesired` and `running` are transaction body steps (cloud/registry/tx.ts).
 */
export interface Deliverable {
  item(seq: number): Promise<DeliveryItem>;
  /** The device's desired release of this kind. */
  desiredOf(tx: TxDb, t: Tables, deviceId: string): Generator<PromiseLike<unknown>, number | null, unknown>;
  setDesired(tx: TxDb, t: Tables, deviceId: string, seq: number | null): Generator<PromiseLike<unknown>, void, unknown>;
  /** Re-issues release `prev` under a new, higher sequence; returns it. */
  reissue(prev: number): Promise<number>;
  /** A condition on `devices` true when the device runs the rollout's release (the status says so). */
  running(tx: TxDb, t: Tables, r: RolloutRow): Generator<PromiseLike<unknown>, SQL, unknown>;
  /** Whether canaries must show telemetry for the release (models only: telemetry names the model release). */
  telemetryEvidence: boolean;
}

export interface DeliverableDeps {
  registry: StoreRegistry;
  publisher: ReleasePublisher;
  reissue(previousSeq: number): Promise<number>;
  reissueAgent?(agentSeq: number): Promise<number>;
}

export function modelDeliverable(d: DeliverableDeps): Deliverable {
  return {
    async item(seq) {
      const [rel] = await d.registry.q.select().from(d.registry.t.releases).where(eq(d.registry.t.releases.seq, seq)).limit(1);
      if (!rel) throw new RolloutError(`release ${seq} not found`, 'not_found');
      const parent = rel.parentSeq ?? (rel.manifest as { parent?: number | null }).parent ?? null;
      return { seq, sha256: rel.sha256, parent, ensure: () => d.publisher.ensureChunks(d.registry, rel), publish: (id) => d.publisher.publishDesired(id, signedManifestOf(rel)) };
    },
    *desiredOf(tx, t, id) {
      const [row] = yield* q(tx.select({ s: t.devices.desiredSeq }).from(t.devices).where(eq(t.devices.id, id)).limit(1));
      return row?.s ?? null;
    },
    *setDesired(tx, t, id, seq) {
      yield* q(tx.update(t.devices).set({ desiredSeq: seq }).where(eq(t.devices.id, id)));
    },
    reissue: (prev) => d.reissue(prev),
    *running(_tx, t, r) {
      return eq(t.devices.runningSeq, r.releaseSeq);
    },
    telemetryEvidence: true,
  };
}

export function agentDeliverable(d: DeliverableDeps): Deliverable {
  const reg = d.registry;
  return {
    async item(seq) {
      const { agentReleases } = reg.t;
      const [rel] = await reg.q.select().from(agentReleases).where(eq(agentReleases.agentSeq, seq)).limit(1);
      if (!rel) throw new RolloutError(`agent release ${seq} not found`, 'not_found');
      // What a rollback goes back to: the newest upload of another version on the platform before this one.
      const original = rel.reissueOf ?? rel.agentSeq;
      const [prev] = await reg.q
        .select({ s: agentReleases.agentSeq })
        .from(agentReleases)
        .where(and(eq(agentReleases.platform, rel.platform), ne(agentReleases.version, rel.version), isNull(agentReleases.reissueOf), lt(agentReleases.agentSeq, original)))
        .orderBy(desc(agentReleases.agentSeq))
        .limit(1);
      return { seq, sha256: rel.sha256, parent: prev?.s ?? null, ensure: () => ensureAgentChunks(d.publisher, reg, rel), publish: (id) => d.publisher.publishAgent(id, signedAgentOf(rel)) };
    },
    *desiredOf(tx, t, id) {
      const [row] = yield* q(tx.select({ s: t.devices.desiredAgentSeq }).from(t.devices).where(eq(t.devices.id, id)).limit(1));
      return row?.s ?? null;
    },
    *setDesired(tx, t, id, seq) {
      yield* q(tx.update(t.devices).set({ desiredAgentSeq: seq }).where(eq(t.devices.id, id)));
    },
    reissue: (prev) => {
      if (!d.reissueAgent) return Promise.reject(new RolloutError('this cloud cannot re-issue agent releases (no signing key wired)', 'invalid'));
      return d.reissueAgent(prev);
    },
    *running(tx, t, r) {
      const [row] = yield* q(tx.select({ v: t.agentReleases.version }).from(t.agentReleases).where(eq(t.agentReleases.agentSeq, r.releaseSeq)).limit(1));
      // An unknown release runs nowhere (PostgreSQL text cannot hold the NUL byte this used to compare with).
      if (!row) return sql`1 = 0`;
      // status.agent is `apprentice-edge/<version>`; a bare version is accepted too.
      return or(eq(t.devices.agent, agentStatusOf(row.v)), eq(t.devices.agent, row.v))!;
    },
    telemetryEvidence: false,
  };
}

/**
 * Splits an agent rollout's target (issue 14): devices whose last status names `platform` and declares
 * `agent-update` take it; the others get the reason they are skipped (shown as `incompatible`).
 */
export function agentTargets(targeted: DeviceRow[], platform: string): { targeted: DeviceRow[]; skipped: { id: string; reason: string }[] } {
  const ok: DeviceRow[] = [];
  const skipped: { id: string; reason: string }[] = [];
  for (const d of targeted) {
    if (d.platform === null) skipped.push({ id: d.id, reason: `platform unknown (no status with a platform yet); the release is for ${platform}` });
    else if (d.platform !== platform) skipped.push({ id: d.id, reason: `platform ${d.platform}, the release is for ${platform}` });
    else if (!(d.capabilities ?? []).includes(DEVICE_CAPABILITIES.agentUpdate)) skipped.push({ id: d.id, reason: `needs ${DEVICE_CAPABILITIES.agentUpdate} (the daemon cannot update itself)` });
    else ok.push(d);
  }
  return { targeted: ok, skipped };
}
