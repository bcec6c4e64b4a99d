import { and, desc, eq, inArray } from 'drizzle-orm';
import { Counter, type Registry as PromRegistry } from 'prom-client';
import semver from 'semver';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import type { AgentManifest } from '../../shared/protocol/agent.js';
import { DEVICE_CAPABILITIES, PROTOCOL_REVISION } from '../../shared/protocol/compat.js';
import { agentReleaseBySeq, setDesiredAgent } from '../agents/store.js';
import { AgentIncompatibleError } from '../fleet/publisher.js';
import type { StoreRegistry } from '../registry/open.js';
import type { DeviceRow, RolloutRow } from '../registry/schema.js';
import { desiredAgentSeqOf, joinAgentRollout } from './agent-join.js';
import type { Deliverable, DeliveryItem } from './deliverable.js';
import { inTarget, type RolloutTarget } from './policy.js';

/**
 * Agent rollouts a late device converges to: one in its fleet stage (the device joins it), or a finished
 * one (a rolled-back one gives its re-issued previous version).
 */
export const AGENT_CONVERGE_STATES = ['fleet', 'completed', 'rolled_back'] as const;

/**
 * Why a late device was not given a platform's latest agent release (the counter's `result` label), `sent`,
 * or `joined_paused` (it joined a paused fleet-stage rollout: sent on resume).
 */
export type AgentConvergeResult = 'sent' | 'joined_paused' | 'no_capability' | 'newer' | 'not_upgradable' | 'protocol_too_new' | 'incompatible';

/** Fleet-stage and finished agent rollouts, newest first (converge picks the first of the device's platform whose target includes it). */
export async function agentConvergeCandidates(reg: StoreRegistry, limit = 200): Promise<RolloutRow[]> {
  const { rollouts } = reg.t;
  return reg.q
    .select()
    .from(rollouts)
    .where(and(eq(rollouts.kind, 'agent'), inArray(rollouts.state, [...AGENT_CONVERGE_STATES])))
    .orderBy(desc(rollouts.createdAt), desc(rollouts.id))
    .limit(limit);
}

/** `apprentice-edge/0.2.0` (status.agent) → `0.2.0`; a bare version stays; null when unknown. */
export function runningAgentVersion(agent: string | null): string | null {
  if (!agent) return null;
  const slash = agent.lastIndexOf('/');
  return slash >= 0 ? agent.slice(slash + 1) : agent;
}

export interface AgentConvergeDeps {
  registry: StoreRegistry;
  /** The agent kind of the rollout steps (cloud/rollouts/deliverable.ts agentDeliverable). */
  agent: Deliverable;
  /** Gives a joined member of a fleet-stage rollout the release (RolloutSteps.give with its row: waiting → desired, deadline). */
  give(r: RolloutRow, item: DeliveryItem, deviceId: string): Promise<void>;
  log?: Logger;
  metrics?: PromRegistry;
}

/**
 * Late joiners of agent rollouts (issue 14): a device that reports its platform and `agent-update` after
 * its platform's agent rollout finished gets the release that rollout left (the new version when
 * completed, the re-issued previous one when rolled back) on its retained `agent` topic, as model
 * releases converge (steps.ts `converge`). While the rollout is in its fleet stage the device joins it
 * instead (agent-join.ts: a row in the current wave, or its `incompatible` row from creation, when it had
 * no platform yet, back to `waiting`) and is given the release at once, so its install, failure or
 * timeout counts in that rollout (a paused rollout gives it on resume). Never a downgrade: a device already on that version, given
 * it (or a later one) before, or running a newer one gets nothing. A release whose `upgradeFrom` does
 * not list the running version, or whose `minProtocolVersion` is above this cloud's, is not sent
 * either (the device would refuse it); every such refusal is logged and counted.
 */
export class AgentConverger {
  private readonly log: Logger;
  private readonly counter: Counter<'result'>;

  constructor(private readonly deps: AgentConvergeDeps) {
    this.log = deps.log ?? silentLogger;
    const reg = deps.metrics;
    const name = 'apprentice_cloud_agent_converge_total';
    this.counter =
      (reg?.getSingleMetric(name) as Counter<'result'> | undefined) ??
      new Counter({ name, help: "Late devices' agent convergence by result: sent, joined_paused (joined a paused fleet-stage rollout), or why the platform's latest agent release was not sent (no_capability, newer, not_upgradable, protocol_too_new, incompatible)", labelNames: ['result'] as const, registers: reg ? [reg] : [] });
  }

  /** Converges one device (after an online status); returns what happened, or undefined when there is nothing to converge to. */
  async converge(deviceId: string, candidates: readonly RolloutRow[]): Promise<AgentConvergeResult | undefined> {
    const { q, t } = this.deps.registry;
    const [dev]: (DeviceRow | undefined)[] = await q.select().from(t.devices).where(eq(t.devices.id, deviceId)).limit(1);
    if (!dev || dev.revoked || dev.platform === null) return undefined;
    const candidate = candidates.find((r) => r.model === `agent:${dev.platform}` && inTarget(r.target as RolloutTarget, dev));
    if (!candidate) return undefined;
    const seq = candidate.state === 'rolled_back' ? candidate.rollbackSeq : candidate.releaseSeq;
    if (seq === null) return undefined;
    // Given this release, or a later one (an active rollout's): what happens next is the device's to report.
    if (dev.desiredAgentSeq !== null && dev.desiredAgentSeq >= seq) return undefined;
    const rel = await agentReleaseBySeq(this.deps.registry, seq);
    if (!rel) return undefined;
    const running = runningAgentVersion(dev.agent);
    if (running === rel.version) return undefined;
    const m = rel.manifest as AgentManifest;
    const refuse = (result: Exclude<AgentConvergeResult, 'sent'>, why: string): AgentConvergeResult => {
      this.counter.inc({ result });
      (result === 'no_capability' ? this.log.debug : this.log.info).call(this.log, { deviceId, rollout: candidate.id, agentSeq: seq, version: rel.version, running, result }, `rollouts/agent-converge-skipped: ${why}`);
      return result;
    };
    if (!(dev.capabilities ?? []).includes(DEVICE_CAPABILITIES.agentUpdate)) return refuse('no_capability', `the device does not declare ${DEVICE_CAPABILITIES.agentUpdate}`);
    if (running && semver.valid(running) && semver.valid(rel.version) && semver.gt(running, rel.version)) return refuse('newer', `it runs ${running}, newer than ${rel.version}`);
    if (!m.upgradeFrom.includes('*') && !(running && m.upgradeFrom.includes(running))) return refuse('not_upgradable', `${rel.version} upgrades from ${m.upgradeFrom.join(', ')}; it runs ${running ?? 'an unknown version'}`);
    if (m.minProtocolVersion > PROTOCOL_REVISION) return refuse('protocol_too_new', `${rel.version} needs protocol ${m.minProtocolVersion}; this cloud speaks ${PROTOCOL_REVISION}`);
    const item = await this.deps.agent.item(seq);
    if (candidate.state === 'fleet') return this.join(candidate, item, deviceId, running);
    await item.ensure();
    try {
      await item.publish(deviceId);
    } catch (err) {
      if (err instanceof AgentIncompatibleError) return refuse('incompatible', err.message);
      throw err;
    }
    await setDesiredAgent(this.deps.registry, deviceId, seq);
    this.counter.inc({ result: 'sent' });
    this.log.info({ deviceId, rollout: candidate.id, agentSeq: seq, version: rel.version, running }, 'rollouts/agent-late-device');
    return 'sent';
  }

  /** A qualifying device joins fleet-stage rollout `r` and is given its release (undefined: nothing to do). */
  private async join(r: RolloutRow, item: DeliveryItem, deviceId: string, running: string | null): Promise<AgentConvergeResult | undefined> {
    const j = await joinAgentRollout(this.deps.registry, { rolloutId: r.id, deviceId, at: new Date() });
    // The rollout ended meanwhile (the next status converges to what it left), or the device is a settled member.
    if (!j || j.state !== 'waiting') return undefined;
    const ctx = { deviceId, rollout: r.id, agentSeq: item.seq, running, joined: j.joined, wave: j.rollout.wave };
    if (j.rollout.pausedAt) {
      this.counter.inc({ result: 'joined_paused' });
      this.log.info(ctx, 'rollouts/agent-joined-paused');
      return 'joined_paused';
    }
    await item.ensure();
    await this.deps.give(j.rollout, item, deviceId);
    // give() moves the row to `incompatible` and puts the desired back when the publisher refuses the device.
    const result: AgentConvergeResult = (await desiredAgentSeqOf(this.deps.registry, deviceId)) === item.seq ? 'sent' : 'incompatible';
    this.counter.inc({ result });
    this.log.info(ctx, result === 'sent' ? 'rollouts/agent-joined-fleet' : 'rollouts/agent-join-incompatible');
    return result;
  }
}
