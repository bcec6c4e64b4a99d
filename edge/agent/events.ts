import { PROTOCOL_VERSION, type AgentReason, type DeviceEvent } from '../../shared/protocol/index.js';

export type AgentEventType = 'agent_installed' | 'agent_committed' | 'agent_rolled_back' | 'agent_rejected';

/**
 * An `agent_*` device event (issue 14). The model fields describe the model served (or null); the
 * daemon sends these only to a cloud that accepts CLOUD_FEATURES.agentEvents.
 */
export function agentEvent(
  deviceId: string,
  at: Date,
  type: AgentEventType,
  agent: { version: string; agentSeq: number | null; running: string; reason?: AgentReason },
  detail?: string,
): DeviceEvent {
  const ev: DeviceEvent = { v: PROTOCOL_VERSION, deviceId, at: at.toISOString(), type, model: null, release: null, sha256: null, agent: { version: agent.version, agentSeq: agent.agentSeq, running: agent.running, ...(agent.reason ? { reason: agent.reason } : {}) } };
  if (detail) ev.detail = detail.length > 1024 ? `${detail.slice(0, 1023)}…` : detail;
  return ev;
}
