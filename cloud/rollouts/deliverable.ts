import { and, desc, eq, isNull, lt, ne, or, type SQL } from 'drizzle-orm';
import { ensureAgentChunks } from '../agents/delivery.js';
import { signedAgentOf } from '../agents/manifest.js';
import { signedManifestOf, type ReleasePublisher } from '../fleet/publisher.js';
import type { Registry } from '../registry/db.js';
import { agentReleases, devices, releases, type DeviceRow, type RolloutRow } from '../registry/schema.js';
import { DEVICE_CAPABILITIES } from '../../shared/protocol/compat.js';
import { RolloutError } from './policy.js';
import type { Db } from './store.js';

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
 */
export interface Deliverable {
  item(seq: number): DeliveryItem;
  /** The device's desired release of this kind. */
  desiredOf(db: Db, deviceId: string): number | null;
  setDesired(db: Db, deviceId: string, seq: number | null): void;
  /** Re-issues release `prev` under a new, higher sequence; returns it. */
  reissue(prev: number): Promise<number>;
  /** A condition on `devices` true when the device runs the rollout's release (the status says so). */
  running(r: RolloutRow): SQL;
  /** Whether canaries must show telemetry for the release (models only: telemetry names the model release). */
  telemetryEvidence: boolean;
}

export interface DeliverableDeps {
  registry: Registry;
  publisher: ReleasePublisher;
  reissue(previousSeq: number): Promise<number>;
  reissueAgent?(agentSeq: number): Promise<number>;
}

export function modelDeliverable(d: DeliverableDeps): Deliverable {
  return {
    item(seq) {
      const rel = d.registry.db.select().from(releases).where(eq(releases.seq, seq)).get();
      if (!rel) throw new RolloutError(`release ${seq} not found`, 'not_found');
      const parent = rel.parentSeq ?? (rel.manifest as { parent?: number | null }).parent ?? null;
      return { seq, sha256: rel.sha256, parent, ensure: () => d.publisher.ensureChunks(d.registry, rel), publish: (id) => d.publisher.publishDesired(id, signedManifestOf(rel)) };
    },
    desiredOf: (db, id) => db.select({ s: devices.desiredSeq }).from(devices).where(eq(devices.id, id)).get()?.s ?? null,
    setDesired: (db, id, seq) => void db.update(devices).set({ desiredSeq: seq }).where(eq(devices.id, id)).run(),
    reissue: (prev) => d.reissue(prev),
    running: (r) => eq(devices.runningSeq, r.releaseSeq),
    telemetryEvidence: true,
  };
}

export function agentDeliverable(d: DeliverableDeps): Deliverable {
  const db = d.registry.db;
  const row = (seq: number) => {
    const rel = db.select().from(agentReleases).where(eq(agentReleases.agentSeq, seq)).get();
    if (!rel) throw new RolloutError(`agent release ${seq} not found`, 'not_found');
    return rel;
  };
  return {
    item(seq) {
      const rel = row(seq);
      // What a rollback goes back to: the newest upload of another version on the platform before this one.
      const original = rel.reissueOf ?? rel.agentSeq;
      const prev = db
        .select({ s: agentReleases.agentSeq })
        .from(agentReleases)
        .where(and(eq(agentReleases.platform, rel.platform), ne(agentReleases.version, rel.version), isNull(agentReleases.reissueOf), lt(agentReleases.agentSeq, original)))
        .orderBy(desc(agentReleases.agentSeq))
        .limit(1)
        .get();
      return { seq, sha256: rel.sha256, parent: prev?.s ?? null, ensure: () => ensureAgentChunks(d.publisher, d.registry, rel), publish: (id) => d.publisher.publishAgent(id, signedAgentOf(rel)) };
    },
    desiredOf: (x, id) => x.select({ s: devices.desiredAgentSeq }).from(devices).where(eq(devices.id, id)).get()?.s ?? null,
    setDesired: (x, id, seq) => void x.update(devices).set({ desiredAgentSeq: seq }).where(eq(devices.id, id)).run(),
    reissue: (prev) => {
      if (!d.reissueAgent) return Promise.reject(new RolloutError('this cloud cannot re-issue agent releases (no signing key wired)', 'invalid'));
      return d.reissueAgent(prev);
    },
    running: (r) => {
      const version = db.select({ v: agentReleases.version }).from(agentReleases).where(eq(agentReleases.agentSeq, r.releaseSeq)).get()?.v ?? '\u0000';
      // status.agent is `apprentice-edge/<version>`; a bare version is accepted too.
      return or(eq(devices.agent, agentStatusOf(version)), eq(devices.agent, version))!;
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
