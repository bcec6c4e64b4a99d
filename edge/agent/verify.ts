import { verifyAgentManifest, type TrustedKey } from '../../shared/manifest/index.js';
import type { AgentManifest, AgentReason } from '../../shared/protocol/index.js';

export interface AgentCheckContext {
  trustedKeys: readonly TrustedKey[];
  /** The trusted time (max(clock, time floor)). */
  now: Date;
  /** The agent floor: highest agentSeq switched to, or refused after a failed trial. */
  floor: number;
  /** `${process.platform}-${process.arch}`. */
  platform: string;
  /** The version running now. */
  running: string;
  /** The cloud's protocol revision (cloud info; 1 when unknown). */
  cloudProtocol: number;
}

export type AgentVerdict = { ok: true; manifest: AgentManifest } | { ok: false; reason: AgentReason; detail: string; manifest: AgentManifest | null };

/**
 * Whether a signed agent manifest may be installed on this device, in order: signature (trusted key,
 * then the schema), sequence floor, expiry, platform, upgrade path, protocol. Pure: nothing touches the
 * disk before this said yes.
 */
export function checkAgentManifest(payload: unknown, ctx: AgentCheckContext): AgentVerdict {
  const v = verifyAgentManifest(payload, ctx.trustedKeys);
  if (!v.ok) return { ok: false, reason: v.reason, detail: v.detail, manifest: null };
  const m = v.manifest;
  const no = (reason: AgentReason, detail: string): AgentVerdict => ({ ok: false, reason, detail, manifest: m });
  if (m.agentSeq <= ctx.floor) return no('stale_release', `agentSeq ${m.agentSeq} is not above the agent floor ${ctx.floor}`);
  if (Date.parse(m.expiresAt) <= ctx.now.getTime()) return no('expired', `expired at ${m.expiresAt} (trusted time ${ctx.now.toISOString()})`);
  if (m.platform !== ctx.platform) return no('wrong_platform', `built for ${m.platform}, this device is ${ctx.platform}`);
  if (!m.upgradeFrom.includes('*') && !m.upgradeFrom.includes(ctx.running)) return no('not_upgradable', `upgrades from ${m.upgradeFrom.join(', ')}, this device runs ${ctx.running}`);
  if (m.minProtocolVersion > ctx.cloudProtocol) return no('protocol_too_old', `needs protocol ${m.minProtocolVersion}, the cloud speaks ${ctx.cloudProtocol}`);
  return { ok: true, manifest: m };
}
