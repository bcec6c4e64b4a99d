import { and, asc, count, desc, eq, isNotNull, sql, type SQL } from 'drizzle-orm';
import type { StoreRegistry } from '../registry/open.js';
import type { DeviceRow } from '../registry/schema.js';

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
 * The few SQL fragments the two registry dialects spell differently (issue 15), in one place. Booleans are
 * written TRUE / FALSE, which SQLite (3.23+) reads as 1 / 0 and PostgreSQL as booleans.
 */
interface DialectSql {
  /** `+col` on SQLite keeps the planner from an index (see stateWhere); PostgreSQL has no unary + on booleans. */
  noIndex(col: SQL): SQL;
  /** The device is in this group (a JSON string[] column). */
  inGroup(group: string): SQL;
  /** The JSON text of a json column (for substring search). */
  jsonText(col: SQL): SQL;
  /** Case-insensitive: `needle` occurs in `hay`. */
  contains(hay: SQL, needle: string): SQL;
  /** A JSON object column's string field. */
  jsonField(col: SQL, field: string): SQL;
  /** Keeps a subquery from being flattened into its parent (SQLite: LIMIT -1; PostgreSQL: OFFSET 0). */
  fence: SQL;
}

function dialectSql(reg: StoreRegistry): DialectSql {
  if (reg.dialect === 'postgres')
    return {
      noIndex: (col) => col,
      inGroup: (group) => sql`EXISTS (SELECT 1 FROM json_array_elements_text(devices.groups) g WHERE g = ${group})`,
      jsonText: (col) => sql`(${col})::text`,
      contains: (hay, needle) => sql`strpos(lower(${hay}), lower(${needle})) > 0`,
      jsonField: (col, field) => sql`(${col} ->> ${field})`,
      fence: sql`OFFSET 0`,
    };
  return {
    noIndex: (col) => sql`+${col}`,
    inGroup: (group) => sql`EXISTS (SELECT 1 FROM json_each(devices.groups) g WHERE g.value = ${group})`,
    jsonText: (col) => col,
    contains: (hay, needle) => sql`instr(lower(${hay}), lower(${needle})) > 0`,
    jsonField: (col, field) => sql`json_extract(${col}, ${`$.${field}`})`,
    fence: sql`LIMIT -1`,
  };
}

/**
 * Devices `state` in a rollout that still matters (not ended by abort, rollback or a newer rollout). Not
 * correlated: SQLite builds the set once per statement (an ephemeral index), not one lookup per device.
 */
function inRolloutState(states: readonly string[]): SQL {
  // CROSS JOIN keeps the (few) rollouts outside, so rollout_devices is read through its (rollout_id, state) index.
  return sql`devices.id IN (SELECT rd.device_id FROM rollouts r CROSS JOIN rollout_devices rd
    WHERE rd.rollout_id = r.id AND rd.state IN (${sql.join(states.map((st) => sql`${st}`), sql`, `)}) AND r.state NOT IN ('aborted', 'rolled_back', 'superseded'))`;
}

/** Each attention reason as a predicate on `devices` (revoked devices need none). */
function reasonPredicates(d: DialectSql, now: Date): Record<AttentionReason, SQL> {
  const dropCutoff = new Date(now.getTime() - DROPPING_WINDOW_MS).toISOString();
  return {
    rollout_failed: inRolloutState(['failed']),
    quarantined: inRolloutState(['quarantined']),
    rolled_back: sql`devices.rolled_back_at IS NOT NULL`,
    unhealthy: sql`(devices.online = TRUE AND (devices.health = 'degraded' OR devices.degraded IS NOT NULL))`,
    outbox_dropping: sql`devices.dropped_at >= ${dropCutoff}`,
    trust_stale: sql`${d.jsonField(sql`devices.trust`, 'state')} = 'trust_stale'`,
  };
}

/** 1 when the predicate holds, else 0 (also for a NULL predicate), on both dialects. */
const bit = (p: SQL): SQL => sql`(CASE WHEN ${p} THEN 1 ELSE 0 END)`;

/** Per-device reason columns (0/1), shared by the list and the summary. */
function reasonColumns(d: DialectSql, now: Date): Record<AttentionReason, SQL.Aliased<number>> {
  const p = reasonPredicates(d, now);
  return Object.fromEntries(ATTENTION_REASONS.map((k) => [k, bit(sql`devices.revoked = FALSE AND ${p[k]}`).mapWith(Number).as(k)])) as Record<AttentionReason, SQL.Aliased<number>>;
}

function attentionWhere(d: DialectSql, now: Date): SQL {
  const p = reasonPredicates(d, now);
  return sql`(devices.revoked = FALSE AND (${sql.join(ATTENTION_REASONS.map((k) => p[k]), sql` OR `)}))`;
}

/**
 * `+devices.online` (SQLite) keeps SQLite from the online index: walking the primary key in id order stops
 * after one page, where the index would fetch, evaluate and sort every matching device first.
 */
function stateWhere(d: DialectSql, state: DeviceStateFilter, now: Date): SQL {
  const online = d.noIndex(sql`devices.online`);
  switch (state) {
    case 'online':
      return sql`(devices.revoked = FALSE AND ${online} = TRUE)`;
    case 'offline':
      return sql`(devices.revoked = FALSE AND ${online} = FALSE AND devices.last_seen IS NOT NULL)`;
    case 'never_seen':
      return sql`(devices.revoked = FALSE AND ${online} = FALSE AND devices.last_seen IS NULL)`;
    case 'revoked':
      return sql`devices.revoked = TRUE`;
    case 'attention':
      return attentionWhere(d, now);
  }
}

function filters(d: DialectSql, q: DeviceQuery, now: Date): SQL[] {
  const where: SQL[] = [];
  if (q.group !== undefined) where.push(d.inGroup(q.group));
  if (q.state !== undefined) where.push(stateWhere(d, q.state, now));
  if (q.release !== undefined) where.push(sql`devices.running_seq = ${q.release}`);
  if (q.q !== undefined && q.q !== '') where.push(sql`(${d.contains(sql`devices.id`, q.q)} OR ${d.contains(d.jsonText(sql`devices.groups`), q.q)})`);
  return where;
}

const all = (parts: SQL[]): SQL | undefined => (parts.length ? sql.join(parts, sql` AND `) : undefined);

/**
 * The device list, filtered and paginated in SQL (ordered by id; the cursor is the last id of a page).
 * Group filters walk each device's JSON groups; the rest use the devices indexes.
 *
 * @example
 * const page = await queryDevices(registry, { state: 'attention', limit: 50 });
 * const next = page.nextCursor && (await queryDevices(registry, { state: 'attention', limit: 50, cursor: page.nextCursor }));
 */
export async function queryDevices(reg: StoreRegistry, q: DeviceQuery): Promise<DevicePage> {
  const now = q.now ?? new Date();
  const d = dialectSql(reg);
  const where = filters(d, q, now);
  const pageWhere = q.cursor === undefined ? where : [...where, sql`devices.id > ${q.cursor}`];
  const rows = await listQuery(reg, d, now)
    .where(all(pageWhere))
    .orderBy(asc(reg.t.devices.id))
    .limit(q.limit + 1);
  const [t] = await reg.q.select({ n: count() }).from(reg.t.devices).where(all(where));
  const more = rows.length > q.limit;
  const page = more ? rows.slice(0, q.limit) : rows;
  return { devices: page.map(item), nextCursor: more ? page[page.length - 1]!.id : null, total: Number(t?.n ?? 0) };
}

/** The list's columns: the device, its running release's model, and one 0/1 column per attention reason. */
function listQuery(reg: StoreRegistry, d: DialectSql, now: Date) {
  const { devices, releases } = reg.t;
  return reg.q
    .select({
      id: devices.id,
      groups: devices.groups,
      online: devices.online,
      lastSeen: devices.lastSeen,
      runningSeq: devices.runningSeq,
      runningSha256: devices.runningSha256,
      desiredSeq: devices.desiredSeq,
      revoked: devices.revoked,
      protocolVersion: devices.protocolVersion,
      capabilities: devices.capabilities,
      trust: devices.trust,
      degraded: devices.degraded,
      agent: devices.agent,
      platform: devices.platform,
      health: devices.health,
      createdAt: devices.createdAt,
      model: releases.model,
      ...reasonColumns(d, now),
    })
    .from(devices)
    .leftJoin(releases, eq(releases.seq, devices.runningSeq));
}

type ListRow = Awaited<ReturnType<typeof listQuery>>[number];

/** The columns of a device row that the API's device view and the device list both show. */
type DeviceColumns = Pick<DeviceRow, 'id' | 'revoked' | 'online' | 'lastSeen' | 'runningSeq' | 'runningSha256' | 'desiredSeq' | 'protocolVersion' | 'degraded' | 'agent' | 'platform'> & {
  groups: unknown;
  capabilities: unknown;
  trust: unknown;
};

/** A device as the API shows it (GET /v1/devices/{id} and the device list); `model` is its running release's. */
export function deviceBasics(r: DeviceColumns, model: string | null) {
  return {
    id: r.id,
    groups: r.groups as string[],
    status: (r.revoked ? 'revoked' : r.online ? 'online' : r.lastSeen ? 'offline' : 'never_seen') as DeviceListItem['status'],
    online: r.online,
    lastSeen: r.lastSeen,
    running: r.runningSeq === null ? null : { model, release: r.runningSeq, sha256: r.runningSha256 },
    desiredRelease: r.desiredSeq,
    revoked: r.revoked,
    protocol: { version: r.protocolVersion ?? 1, capabilities: (r.capabilities as string[] | null) ?? [] },
    trust: (r.trust as DeviceListItem['trust']) ?? null,
    degraded: r.degraded,
    agent: r.agent,
    platform: r.platform,
  };
}

function item(r: ListRow): DeviceListItem {
  return {
    ...deviceBasics(r, r.model),
    health: r.health,
    attention: ATTENTION_REASONS.filter((k) => r[k] === 1),
    createdAt: r.createdAt,
  };
}

/**
 * The overview's tiles and chart: device totals, online / offline, needing attention (by reason), and
 * how many devices run each release of each model.
 *
 * @example
 * const s = await fleetSummary(registry); // { total, online, offline, attention, attentionBy, releases, ... }
 */
export async function fleetSummary(reg: StoreRegistry, { now = new Date() }: { now?: Date } = {}): Promise<FleetSummary> {
  const d = dialectSql(reg);
  const p = reasonPredicates(d, now);
  // Each predicate once per device, as one bit of `m` (a NULL predicate is 0; distinct bits, so + is |);
  // the fence keeps the subquery from being flattened, which would evaluate the predicates again for every sum.
  const mask = sql.join(ATTENTION_REASONS.map((k, i) => sql`(CASE WHEN ${p[k]} THEN ${sql.raw(String(1 << i))} ELSE 0 END)`), sql` + `);
  const { devices, releases } = reg.t;
  const m = sql`m.m`;
  const sumOf = (x: SQL) => sql`coalesce(sum(${x}), 0)`.mapWith(Number);
  const [t] = await reg.q
    .select({
      total: count(),
      online: sumOf(bit(sql`m.online = TRUE`)),
      offline: sumOf(bit(sql`m.online = FALSE AND m.last_seen IS NOT NULL`)),
      never_seen: sumOf(bit(sql`m.online = FALSE AND m.last_seen IS NULL`)),
      attention: sumOf(bit(sql`${m} > 0`)),
      ...Object.fromEntries(ATTENTION_REASONS.map((k, i) => [k, sumOf(sql`(${m} >> ${sql.raw(String(i))}) & 1`)])),
    })
    .from(sql`(SELECT devices.online, devices.last_seen, ${mask} AS m FROM devices WHERE devices.revoked = FALSE ${d.fence}) m`);
  const [rev] = await reg.q.select({ n: count() }).from(devices).where(eq(devices.revoked, true));
  const n = (k: string): number => Number((t as Record<string, unknown> | undefined)?.[k] ?? 0);
  // Count per sequence first (the running index), then name the model: one join per release, not per device.
  const g = reg.q
    .select({ seq: devices.runningSeq, n: count().as('n') })
    .from(devices)
    .where(and(eq(devices.revoked, false), isNotNull(devices.runningSeq)))
    .groupBy(devices.runningSeq)
    .as('g');
  // g's columns named as g.* (drizzle would leave them unqualified, ambiguous beside releases.seq).
  const gSeq = sql`g.running_seq`.mapWith(Number);
  const gN = sql`g.n`.mapWith(Number);
  const releaseRows = await reg.q
    .select({ model: releases.model, release: gSeq, devices: gN })
    .from(g)
    .innerJoin(releases, sql`${releases.seq} = g.running_seq`)
    .orderBy(asc(releases.model), desc(sql`g.n`), desc(sql`g.running_seq`));
  // The agent-version distribution (issue 14): a few distinct versions, so a GROUP BY over the devices.
  const agentRows = await reg.q
    .select({ agent: devices.agent, platform: devices.platform, devices: count() })
    .from(devices)
    .where(and(eq(devices.revoked, false), isNotNull(devices.agent)))
    .groupBy(devices.agent, devices.platform)
    .orderBy(desc(count()), desc(devices.agent));
  return {
    total: n('total'),
    online: n('online'),
    offline: n('offline'),
    neverSeen: n('never_seen'),
    revoked: Number(rev?.n ?? 0),
    attention: n('attention'),
    attentionBy: Object.fromEntries(ATTENTION_REASONS.map((k) => [k, n(k)])) as Record<AttentionReason, number>,
    releases: releaseRows.map((r) => ({ model: r.model, release: Number(r.release), devices: Number(r.devices) })),
    agents: agentRows.map((r) => ({ agent: r.agent!, platform: r.platform, devices: Number(r.devices) })),
    at: now.toISOString(),
  };
}
