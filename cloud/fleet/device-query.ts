import { sql, type SQL } from 'drizzle-orm';
import type { Registry } from '../registry/db.js';

/** What the device list filters on: the overview's tiles. */
export const DEVICE_STATES = ['online', 'offline', 'never_seen', 'revoked', 'attention'] as const;
export type DeviceStateFilter = (typeof DEVICE_STATES)[number];

/** Why a device needs attention (issue 12, fleet overview). */
export const ATTENTION_REASONS = ['rollout_failed', 'quarantined', 'rolled_back', 'unhealthy', 'outbox_dropping', 'trust_stale'] as const;
export type AttentionReason = (typeof ATTENTION_REASONS)[number];

/** An outbox that dropped examples within this window counts as dropping. */
export const DROPPING_WINDOW_MS = 3600_000;

export interface DeviceQuery {
  group?: string;
  state?: DeviceStateFilter;
  /** Running release sequence. */
  release?: number;
  /** Case-insensitive substring of the id or a group. */
  q?: string;
  limit: number;
  /** The previous page's `nextCursor` (the last device id it held). */
  cursor?: string;
  now?: Date;
}

export interface DeviceListItem {
  id: string;
  groups: string[];
  status: 'online' | 'offline' | 'never_seen' | 'revoked';
  online: boolean;
  lastSeen: string | null;
  running: { model: string | null; release: number; sha256: string | null } | null;
  desiredRelease: number | null;
  revoked: boolean;
  protocol: { version: number; capabilities: string[] };
  trust: { keysetVersion: number | null; state: string } | null;
  degraded: string | null;
  agent: string | null;
  platform: string | null;
  /** The last telemetry's health (ok | degraded | no_model), null before any. */
  health: string | null;
  attention: AttentionReason[];
  createdAt: string;
}

export interface DevicePage {
  devices: DeviceListItem[];
  /** Pass as `cursor` for the next page; null on the last. */
  nextCursor: string | null;
  /** Devices matching the filters (all pages). */
  total: number;
}

export interface FleetSummary {
  /** Provisioned and not revoked. */
  total: number;
  online: number;
  /** Seen once, not online now. */
  offline: number;
  neverSeen: number;
  revoked: number;
  /** Devices with at least one attention reason. */
  attention: number;
  attentionBy: Record<AttentionReason, number>;
  /** Devices (not revoked) per running release, per model; most devices first. */
  releases: { model: string; release: number; devices: number }[];
  /** Devices (not revoked, seen) per agent version (status.agent) and platform (issue 14); most devices first. */
  agents: { agent: string; platform: string | null; devices: number }[];
  at: string;
}

/**
 * Devices `state` in a rollout that still matters (not ended by abort, rollback or a newer rollout). Not
 * correlated: SQLite builds the set once per statement (an ephemeral index), not one lookup per device.
 */
function inRolloutState(states: readonly string[]): SQL {
  // CROSS JOIN keeps the (few) rollouts outside, so rollout_devices is read through its (rollout_id, state) index.
  return sql`d.id IN (SELECT rd.device_id FROM rollouts r CROSS JOIN rollout_devices rd
    WHERE rd.rollout_id = r.id AND rd.state IN (${sql.join(states.map((st) => sql`${st}`), sql`, `)}) AND r.state NOT IN ('aborted', 'rolled_back', 'superseded'))`;
}

/** Each attention reason as a predicate on `devices d` (revoked devices need none). */
function reasonPredicates(now: Date): Record<AttentionReason, SQL> {
  const dropCutoff = new Date(now.getTime() - DROPPING_WINDOW_MS).toISOString();
  return {
    rollout_failed: inRolloutState(['failed']),
    quarantined: inRolloutState(['quarantined']),
    rolled_back: sql`d.rolled_back_at IS NOT NULL`,
    unhealthy: sql`(d.online = 1 AND (d.health = 'degraded' OR d.degraded IS NOT NULL))`,
    outbox_dropping: sql`d.dropped_at >= ${dropCutoff}`,
    trust_stale: sql`json_extract(d.trust, '$.state') = 'trust_stale'`,
  };
}

/** Per-device reason columns (0/1), shared by the list and the summary. */
function reasonColumns(now: Date): SQL {
  const p = reasonPredicates(now);
  return sql.join(
    ATTENTION_REASONS.map((k) => sql`(d.revoked = 0 AND ${p[k]}) AS ${sql.raw(k)}`),
    sql`, `,
  );
}

function attentionWhere(now: Date): SQL {
  const p = reasonPredicates(now);
  return sql`(d.revoked = 0 AND (${sql.join(ATTENTION_REASONS.map((k) => p[k]), sql` OR `)}))`;
}

/**
 * `+d.online` keeps SQLite from the online index: walking the primary key in id order stops after one
 * page, where the index would fetch, evaluate and sort every matching device first.
 */
function stateWhere(state: DeviceStateFilter, now: Date): SQL {
  switch (state) {
    case 'online':
      return sql`(d.revoked = 0 AND +d.online = 1)`;
    case 'offline':
      return sql`(d.revoked = 0 AND +d.online = 0 AND d.last_seen IS NOT NULL)`;
    case 'never_seen':
      return sql`(d.revoked = 0 AND +d.online = 0 AND d.last_seen IS NULL)`;
    case 'revoked':
      return sql`d.revoked = 1`;
    case 'attention':
      return attentionWhere(now);
  }
}

function filters(q: DeviceQuery, now: Date): SQL[] {
  const where: SQL[] = [];
  if (q.group !== undefined) where.push(sql`EXISTS (SELECT 1 FROM json_each(d.groups) g WHERE g.value = ${q.group})`);
  if (q.state !== undefined) where.push(stateWhere(q.state, now));
  if (q.release !== undefined) where.push(sql`d.running_seq = ${q.release}`);
  if (q.q !== undefined && q.q !== '') where.push(sql`(instr(lower(d.id), lower(${q.q})) > 0 OR instr(lower(d.groups), lower(${q.q})) > 0)`);
  return where;
}

const and = (parts: SQL[]): SQL => (parts.length ? sql`WHERE ${sql.join(parts, sql` AND `)}` : sql``);

interface ListRow {
  id: string;
  groups: string;
  online: number;
  last_seen: string | null;
  running_seq: number | null;
  running_sha256: string | null;
  desired_seq: number | null;
  revoked: number;
  protocol_version: number | null;
  capabilities: string | null;
  trust: string | null;
  degraded: string | null;
  agent: string | null;
  platform: string | null;
  health: string | null;
  created_at: string;
  model: string | null;
  rollout_failed: number;
  quarantined: number;
  rolled_back: number;
  unhealthy: number;
  outbox_dropping: number;
  trust_stale: number;
}

function item(r: ListRow): DeviceListItem {
  return {
    id: r.id,
    groups: JSON.parse(r.groups) as string[],
    status: r.revoked ? 'revoked' : r.online ? 'online' : r.last_seen ? 'offline' : 'never_seen',
    online: r.online === 1,
    lastSeen: r.last_seen,
    running: r.running_seq === null ? null : { model: r.model, release: r.running_seq, sha256: r.running_sha256 },
    desiredRelease: r.desired_seq,
    revoked: r.revoked === 1,
    protocol: { version: r.protocol_version ?? 1, capabilities: r.capabilities ? (JSON.parse(r.capabilities) as string[]) : [] },
    trust: r.trust ? (JSON.parse(r.trust) as DeviceListItem['trust']) : null,
    degraded: r.degraded,
    agent: r.agent,
    platform: r.platform,
    health: r.health,
    attention: ATTENTION_REASONS.filter((k) => r[k] === 1),
    createdAt: r.created_at,
  };
}

/**
 * The device list, filtered and paginated in SQL (ordered by id; the cursor is the last id of a page).
 * Group filters walk each device's JSON groups; the rest use the devices indexes.
 *
 * @example
 * const page = await queryDevices(registry, { state: 'attention', limit: 50 });
 * const next = page.nextCursor && (await queryDevices(registry, { state: 'attention', limit: 50, cursor: page.nextCursor }));
 */
export async function queryDevices(reg: Registry, q: DeviceQuery): Promise<DevicePage> {
  const now = q.now ?? new Date();
  const where = filters(q, now);
  const pageWhere = q.cursor === undefined ? where : [...where, sql`d.id > ${q.cursor}`];
  const rows = reg.db.all<ListRow>(sql`
    SELECT d.id, d.groups, d.online, d.last_seen, d.running_seq, d.running_sha256, d.desired_seq, d.revoked,
      d.protocol_version, d.capabilities, d.trust, d.degraded, d.agent, d.platform, d.health, d.created_at, rel.model AS model,
      ${reasonColumns(now)}
    FROM devices d LEFT JOIN releases rel ON rel.seq = d.running_seq
    ${and(pageWhere)}
    ORDER BY d.id LIMIT ${q.limit + 1}`);
  const total = reg.db.get<{ n: number }>(sql`SELECT count(*) AS n FROM devices d ${and(where)}`)?.n ?? 0;
  const more = rows.length > q.limit;
  const page = more ? rows.slice(0, q.limit) : rows;
  return { devices: page.map(item), nextCursor: more ? page[page.length - 1]!.id : null, total };
}

/**
 * The overview's tiles and chart: device totals, online / offline, needing attention (by reason), and
 * how many devices run each release of each model.
 *
 * @example
 * const s = await fleetSummary(registry); // { total, online, offline, attention, attentionBy, releases, ... }
 */
export async function fleetSummary(reg: Registry, { now = new Date() }: { now?: Date } = {}): Promise<FleetSummary> {
  const p = reasonPredicates(now);
  // Each predicate once per device, as one bit of `m` (a NULL predicate is 0); LIMIT -1 keeps SQLite from
  // flattening the subquery, which would evaluate the predicates again for every sum.
  const mask = sql.join(ATTENTION_REASONS.map((k, i) => sql`(ifnull(${p[k]}, 0) << ${sql.raw(String(i))})`), sql` | `);
  const t = reg.db.get<Record<string, number | null>>(sql`
    SELECT count(*) AS total, sum(online) AS online,
      sum(online = 0 AND last_seen IS NOT NULL) AS offline, sum(online = 0 AND last_seen IS NULL) AS never_seen,
      sum(m > 0) AS attention,
      ${sql.join(ATTENTION_REASONS.map((k, i) => sql`sum((m >> ${sql.raw(String(i))}) & 1) AS ${sql.raw(k)}`), sql`, `)}
    FROM (SELECT d.online, d.last_seen, ${mask} AS m FROM devices d WHERE d.revoked = 0 LIMIT -1)`);
  const revoked = reg.db.get<{ n: number }>(sql`SELECT count(*) AS n FROM devices WHERE revoked = 1`)?.n ?? 0;
  const n = (k: string): number => Number(t?.[k] ?? 0);
  // Count per sequence first (the running index), then name the model: one join per release, not per device.
  const releases = reg.db.all<{ model: string; release: number; devices: number }>(sql`
    SELECT rel.model AS model, g.seq AS release, g.n AS devices
    FROM (SELECT running_seq AS seq, count(*) AS n FROM devices WHERE revoked = 0 AND running_seq IS NOT NULL GROUP BY running_seq) g
    JOIN releases rel ON rel.seq = g.seq
    ORDER BY rel.model, devices DESC, release DESC`);
  // The agent-version distribution (issue 14): a few distinct versions, so a GROUP BY over the devices.
  const agents = reg.db.all<{ agent: string; platform: string | null; devices: number }>(sql`
    SELECT agent, platform, count(*) AS devices FROM devices WHERE revoked = 0 AND agent IS NOT NULL
    GROUP BY agent, platform ORDER BY devices DESC, agent DESC`);
  return {
    total: n('total'),
    online: n('online'),
    offline: n('offline'),
    neverSeen: n('never_seen'),
    revoked,
    attention: n('attention'),
    attentionBy: Object.fromEntries(ATTENTION_REASONS.map((k) => [k, n(k)])) as Record<AttentionReason, number>,
    releases,
    agents,
    at: now.toISOString(),
  };
}
