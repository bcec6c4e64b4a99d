import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { and, eq, inArray, isNotNull } from 'drizzle-orm';
import { chunkArtifact, sha256Of } from '../../shared/manifest/index.js';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import {
  cloudInfo,
  cloudInfoSchema,
  deviceCompat,
  desiredFor,
  encodePayload,
  signedKeySetSchema,
  signedAgentManifestSchema,
  signedManifestSchema,
  topics,
  DEVICE_CAPABILITIES,
  type DeviceCapability,
  type DeviceCompat,
  type SignedAgentManifest,
  type SignedKeySet,
  type SignedManifest,
} from '../../shared/protocol/index.js';
import { gcAgentArtifacts, republishAgents } from '../agents/delivery.js';
import { mapLimit } from '../../shared/util/map-limit.js';
import type { StoreRegistry } from '../registry/open.js';
import type { ArtifactBlobs } from '../artifacts/types.js';
import type { ReleaseRow } from '../registry/schema.js';
import { q } from '../registry/tx.js';
import { ACTIVE_ROLLOUT_STATES } from '../rollouts/policy.js';
import type { MqttPublisher } from './mqtt.js';

export class PublishError extends Error {
  override readonly name: string = 'PublishError';
}

/** The release needs a capability the device did not declare: nothing was sent (its rollout state is `incompatible`). */
export class IncompatibleReleaseError extends PublishError {
  override readonly name = 'IncompatibleReleaseError';
  constructor(
    readonly deviceId: string,
    readonly release: number,
    readonly missing: readonly DeviceCapability[],
  ) {
    super(`release ${release} needs ${missing.join(', ')}, which device ${deviceId} did not declare`);
  }
}

/** The device did not declare `agent-update`: no agent manifest was sent (its rollout state is `incompatible`). */
export class AgentIncompatibleError extends PublishError {
  override readonly name = 'AgentIncompatibleError';
  constructor(
    readonly deviceId: string,
    readonly agentSeq: number,
  ) {
    super(`agent release ${agentSeq} needs ${DEVICE_CAPABILITIES.agentUpdate}, which device ${deviceId} did not declare`);
  }
}

/** The cloud's `agent` in its retained info. */
export const CLOUD_AGENT = 'apprentice-cloud/0.1.0';

export interface ReleasePublisherDeps {
  mqtt: MqttPublisher;
  log?: Logger;
  /** Chunk publishes awaiting PUBACK at once; default 16. */
  concurrency?: number;
  /** Base for relative `releases.artifact_path` values (the cloud's data dir); default cwd. */
  dataDir?: string;
  /** The artifact store when it is the registry (PostgreSQL, issue 15): chunks are read from it by sha256, not from dataDir. */
  blobs?: ArtifactBlobs;
  /** What a device declared it understands (cloud/fleet/device-compat.ts); without it, every device is protocol 1. */
  compatOf?: (deviceId: string) => Promise<DeviceCompat>;
  /**
   * Signs `{deviceId, model, cohort}` with a release key (issue 10); the signed assignment rides in
   * `desired` beside the manifest, only to devices declaring `desired.assignment`.
   */
  assign?: (deviceId: string, model: string) => SignedManifest['assignment'] | Promise<SignedManifest['assignment']>;
}

/** Number of retained chunks a release's artifact has. */
export function chunkCountOf(row: Pick<ReleaseRow, 'manifest' | 'bytes'>): number {
  const artifact = (row.manifest as { artifact?: { chunks?: unknown[]; chunkSize?: number } } | null)?.artifact;
  if (Array.isArray(artifact?.chunks)) return artifact.chunks.length;
  if (artifact?.chunkSize) return Math.ceil(row.bytes / artifact.chunkSize);
  throw new PublishError('release manifest has no artifact chunk list');
}

/** The `desired` payload of a release row: its manifest as signed and the detached signature. */
export function signedManifestOf(row: Pick<ReleaseRow, 'manifest' | 'signature'>): SignedManifest {
  return { manifest: row.manifest, signature: row.signature } as SignedManifest;
}

/**
 * Puts releases on the broker as devices read them (DESIGN.md "Protocol"): artifact chunks and
 * desired states retained at QoS 1, and removes them again (an empty retained publish deletes a
 * retained message, [MQTT-3.3.1-10]).
 */
export class ReleasePublisher {
  private readonly log: Logger;
  private readonly concurrency: number;

  constructor(private readonly deps: ReleasePublisherDeps) {
    this.log = deps.log ?? silentLogger;
    this.concurrency = deps.concurrency ?? 16;
  }

  /**
   * A release's artifact bytes: from the registry's artifact store by sha256 (checked there) when it is one,
   * else the file at its registry path (relative to the data dir).
   */
  async artifactBytes(kind: 'model' | 'agent', relPath: string, sha256: string): Promise<Uint8Array> {
    if (this.deps.blobs?.backend === 'registry') return this.deps.blobs.readAll(kind, sha256);
    return readFile(resolve(this.deps.dataDir ?? '.', relPath));
  }

  /** Publishes every chunk of `bytes` retained on `artifacts/{sha}/{i}`; checks the sha first. Returns the chunk count. */
  async publishArtifact(sha256: string, bytes: Uint8Array, chunkSize: number): Promise<number> {
    const actual = sha256Of(bytes);
    if (actual !== sha256) throw new PublishError(`artifact bytes hash to ${actual}, not ${sha256}`);
    const chunks = chunkArtifact(bytes, chunkSize);
    await mapLimit(chunks, this.concurrency, (c, i) => this.deps.mqtt.publish(topics.artifactChunk(sha256, i), c, { qos: 1, retain: true }));
    this.log.info({ sha256, chunks: chunks.length, bytes: bytes.byteLength }, 'publisher/artifact-published');
    return chunks.length;
  }

  /** Deletes the retained chunks 0..chunks-1 of an artifact. */
  async clearArtifact(sha256: string, chunks: number): Promise<void> {
    const idx = Array.from({ length: chunks }, (_, i) => i);
    await mapLimit(idx, this.concurrency, (i) => this.deps.mqtt.publish(topics.artifactChunk(sha256, i), Buffer.alloc(0), { qos: 1, retain: true }));
    this.log.info({ sha256, chunks }, 'publisher/artifact-cleared');
  }

  /**
   * Retains `signed` as the device's desired state, as much of it as the device understands
   * (shared/protocol/compat.ts `desiredFor`). Throws IncompatibleReleaseError, sending nothing, when
   * the signed manifest needs a capability the device lacks. The envelope is validated before it leaves.
   */
  async publishDesired(deviceId: string, signed: SignedManifest): Promise<void> {
    const device = (await this.deps.compatOf?.(deviceId)) ?? deviceCompat(null);
    const assignment = signed.assignment ?? (await this.deps.assign?.(deviceId, signed.manifest.model));
    const r = desiredFor(assignment ? { ...signed, assignment } : signed, device);
    if (!r.compatible) throw new IncompatibleReleaseError(deviceId, signed.manifest.release, r.missing);
    if (r.stripped.length) this.log.debug({ deviceId, release: signed.manifest.release, stripped: r.stripped }, 'publisher/desired-stripped');
    await this.deps.mqtt.publish(topics.desired(deviceId), encodePayload(signedManifestSchema, r.desired), { qos: 1, retain: true });
  }

  /** Retains the root-signed key set on `trust/keyset` (devices verify it; the cloud only relays it). */
  async publishKeySet(signed: SignedKeySet): Promise<void> {
    await this.deps.mqtt.publish(topics.keyset(), encodePayload(signedKeySetSchema, signed), { qos: 1, retain: true });
  }

  /**
   * Retains this cloud's protocol info on `apprentice/v1/cloud`, so devices know which new fields it
   * accepts. On every connect (a broker may have lost it, STYLE.md 4). Several replicas publish the
   * same info; during a rolling upgrade the last one wins, so a replica must accept what an older
   * replica advertises (it does: features are only ever added).
   */
  async publishCloudInfo(at: Date = new Date()): Promise<void> {
    await this.deps.mqtt.publish(topics.cloudInfo(), encodePayload(cloudInfoSchema, cloudInfo(at, CLOUD_AGENT)), { qos: 1, retain: true });
  }

  /**
   * Retains a signed agent release on the device's own `agent` topic (issue 14), apart from `desired`.
   * Only to a device declaring `agent-update` (compat.ts): throws AgentIncompatibleError, sending nothing,
   * otherwise. The envelope is validated before it leaves.
   */
  async publishAgent(deviceId: string, signed: SignedAgentManifest): Promise<void> {
    const device = (await this.deps.compatOf?.(deviceId)) ?? deviceCompat(null);
    if (!device.capabilities.has(DEVICE_CAPABILITIES.agentUpdate)) throw new AgentIncompatibleError(deviceId, signed.manifest.agentSeq);
    await this.deps.mqtt.publish(topics.agent(deviceId), encodePayload(signedAgentManifestSchema, signed), { qos: 1, retain: true });
  }

  /** Removes the device's retained agent release (revoked devices). */
  async clearAgent(deviceId: string): Promise<void> {
    await this.deps.mqtt.publish(topics.agent(deviceId), Buffer.alloc(0), { qos: 1, retain: true });
  }

  /** Removes the device's retained desired state (revoked devices). */
  async clearDesired(deviceId: string): Promise<void> {
    await this.deps.mqtt.publish(topics.desired(deviceId), Buffer.alloc(0), { qos: 1, retain: true });
  }

  /**
   * Makes sure a release's chunks are on the broker: reads its artifact file, publishes the chunks
   * with the manifest's chunk size, and marks every release row with the same sha256 published
   * (re-issues share the bytes of the release they re-issue). `force` republishes anyway.
   */
  async ensureChunks(registry: StoreRegistry, row: ReleaseRow, { force = false } = {}): Promise<void> {
    if (row.chunksPublished && !force) return;
    const bytes = await this.artifactBytes('model', row.artifactPath, row.sha256);
    const chunkSize = (row.manifest as { artifact?: { chunkSize?: number } }).artifact?.chunkSize;
    if (!chunkSize) throw new PublishError(`release ${row.seq}: manifest has no artifact.chunkSize`);
    await this.publishArtifact(row.sha256, bytes, chunkSize);
    // A transaction, not a single statement: on the leader's fenced registry (issue 15) it is refused after a takeover.
    await registry.tx((tx, t) => q(tx.update(t.releases).set({ chunksPublished: true }).where(eq(t.releases.sha256, row.sha256))));
  }

  /**
   * Clears the chunks of every published release that no (non-revoked) device runs or is meant to
   * run and no active rollout needs (DESIGN.md: retained chunks cost broker memory). Works per
   * sha256, because a re-issue shares its artifact with the release it re-issues. Returns the
   * cleared sha256s.
   */
  async gcArtifacts(registry: StoreRegistry): Promise<string[]> {
    const { releases } = registry.t;
    const needed = await neededArtifacts(registry);
    const bySha = new Map<string, ReleaseRow>();
    for (const r of await registry.q.select().from(releases).where(eq(releases.chunksPublished, true))) {
      if (!needed.has(r.sha256) && !bySha.has(r.sha256)) bySha.set(r.sha256, r);
    }
    const cleared: string[] = [];
    for (const [sha, row] of bySha) {
      try {
        await this.clearArtifact(sha, chunkCountOf(row));
        await registry.tx((tx, t) => q(tx.update(t.releases).set({ chunksPublished: false }).where(eq(t.releases.sha256, sha))));
        cleared.push(sha);
      } catch (err) {
        this.log.error({ err, sha256: sha }, 'publisher/gc-failed');
      }
    }
    // Agent tarballs (issue 14) hold retained chunks the same way.
    cleared.push(...(await gcAgentArtifacts(this, registry, this.log)));
    return cleared;
  }

  /**
   * Publishes again every retained message the registry says should exist: the chunks of every
   * needed artifact and each device's desired release. For the cloud's start (STYLE.md 4: do not
   * rely on the broker keeping retained state; the embedded aedes keeps it in memory only).
   * Failures are logged per item, never thrown. Returns what was published.
   */
  async republishAll(registry: StoreRegistry): Promise<{ artifacts: number; desired: number; failed: number }> {
    const { releases, devices } = registry.t;
    const needed = [...(await neededArtifacts(registry))];
    let artifacts = 0;
    let failed = 0;
    const rows = needed.length ? await registry.q.select().from(releases).where(inArray(releases.sha256, needed)) : [];
    const bySha = new Map(rows.map((r) => [r.sha256, r]));
    for (const [, row] of bySha) {
      try {
        await this.ensureChunks(registry, row, { force: true });
        artifacts++;
      } catch (err) {
        failed++;
        this.log.error({ err, release: row.seq, sha256: row.sha256 }, 'publisher/republish-artifact-failed');
      }
    }
    const targets = await registry.q
      .select({ id: devices.id, seq: devices.desiredSeq })
      .from(devices)
      .where(and(eq(devices.revoked, false), isNotNull(devices.desiredSeq)));
    const seqs = [...new Set(targets.map((t) => t.seq!))];
    const bySeq = new Map((seqs.length ? await registry.q.select().from(releases).where(inArray(releases.seq, seqs)) : []).map((r) => [r.seq, signedManifestOf(r)]));
    let desired = 0;
    await mapLimit(targets, this.concurrency, async (t) => {
      const signed = bySeq.get(t.seq!);
      if (!signed) return void this.log.warn({ deviceId: t.id, release: t.seq }, 'publisher/desired-release-missing');
      try {
        await this.publishDesired(t.id, signed);
        desired++;
      } catch (err) {
        failed++;
        this.log.error({ err, deviceId: t.id }, 'publisher/republish-desired-failed');
      }
    });
    // Agent releases (issue 14): their chunks and each device's retained `agent`.
    const agents = await republishAgents(this, registry, this.concurrency, this.log);
    artifacts += agents.artifacts;
    failed += agents.failed;
    this.log.info({ artifacts, desired, agents: agents.desired, failed }, 'publisher/republished');
    return { artifacts, desired, failed };
  }
}

/**
 * sha256s whose chunks must stay on the broker: what non-revoked devices run or are meant to run,
 * and the releases (and re-issues) of active rollouts.
 */
export async function neededArtifacts(registry: StoreRegistry): Promise<Set<string>> {
  const { devices, releases, rollouts } = registry.t;
  const needed = new Set<string>();
  const seqs = new Set<number>();
  for (const d of await registry.q.select({ running: devices.runningSha256, desired: devices.desiredSeq }).from(devices).where(eq(devices.revoked, false))) {
    if (d.running) needed.add(d.running);
    if (d.desired !== null) seqs.add(d.desired);
  }
  const active = await registry.q
    .select({ seq: rollouts.releaseSeq, rollbackSeq: rollouts.rollbackSeq })
    .from(rollouts)
    .where(and(eq(rollouts.kind, 'model'), inArray(rollouts.state, [...ACTIVE_ROLLOUT_STATES])));
  for (const r of active) {
    seqs.add(r.seq);
    if (r.rollbackSeq !== null) seqs.add(r.rollbackSeq);
  }
  if (seqs.size) {
    for (const r of await registry.q.select({ sha: releases.sha256 }).from(releases).where(inArray(releases.seq, [...seqs]))) needed.add(r.sha);
  }
  // Only artifacts we have a release for can be published at all.
  const known = needed.size ? new Set((await registry.q.select({ sha: releases.sha256 }).from(releases).where(inArray(releases.sha256, [...needed]))).map((r) => r.sha)) : new Set<string>();
  return known;
}
