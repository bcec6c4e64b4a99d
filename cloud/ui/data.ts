/**
 * What the console reads and records beyond the JSON API: the fleet views of cloud/fleet (device query,
 * summary, events, telemetry history) and the audit log (cloud/audit). Injected (createCloudApi wires the
 * registry-backed stores) so the pages depend on shapes, not on SQL.
 */
export interface AttentionSummary {
  total: number;
  online: number;
  offline: number;
  neverSeen: number;
  revoked: number;
  attention: number;
  attentionBy: Record<string, number>;
  releases: { model: string; release: number; devices: number }[];
  at: string;
}

export interface DeviceItem {
  id: string;
  groups: string[];
  status: 'online' | 'offline' | 'never_seen' | 'revoked';
  online: boolean;
  lastSeen: string | null;
  running: { model: string | null; release: number; sha256: string | null } | null;
  desiredRelease: number | null;
  revoked: boolean;
  trust: { keysetVersion: number | null; state: string } | null;
  degraded: string | null;
  health: string | null;
  attention: string[];
  createdAt: string;
}

export interface DeviceQueryInput {
  group?: string;
  state?: 'online' | 'offline' | 'never_seen' | 'revoked' | 'attention';
  release?: number;
  q?: string;
  limit: number;
  cursor?: string;
}

export interface EventItem {
  id: number;
  at: string;
  source: string;
  type: string;
  model: string | null;
  release: number | null;
  reason: string | null;
  detail: string | null;
}

export interface TelemetryPoint {
  at: string;
  samples: number;
  latencyP50: number | null;
  latencyP95: number | null;
  requests: number;
  errors: number;
  rssBytes: number | null;
  outboxDepth: number | null;
  outboxDropped: number;
}

export interface AuditItem {
  id: number;
  at: string;
  actor: string;
  action: string;
  target: string | null;
  detail: Record<string, unknown> | null;
}

export interface ConsoleData {
  fleetSummary(): Promise<AttentionSummary>;
  queryDevices(q: DeviceQueryInput): Promise<{ devices: DeviceItem[]; nextCursor: string | null; total: number }>;
  deviceEvents(deviceId: string, limit: number): Promise<EventItem[]>;
  telemetry(deviceId: string, resolution: '1m' | '1h'): Promise<TelemetryPoint[]>;
  recordAudit(e: { actor: string; action: string; target?: string | null; detail?: Record<string, unknown> | null }): Promise<unknown>;
  listAudit(o: { limit: number; before?: number }): Promise<AuditItem[]>;
}

