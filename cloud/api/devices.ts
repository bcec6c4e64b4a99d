import { eq } from 'drizzle-orm';
import { Hono } from 'hono';
import { z } from 'zod';
import { deviceId, releaseSeq, sha256Hex, telemetrySchema } from '../../shared/protocol/schemas.js';
import { BUNDLE_VERSION, provisionBundleSchema, type ProvisionBundle } from '../provision/bundle.js';
import { generatePassword, hashPassword } from '../provision/passwd.js';
import { reservedDeviceId } from '../provision/reserved.js';
import type { DeviceRow } from '../registry/schema.js';
import type { ApiContext } from './context.js';
import { conflict, errorBodySchema, notFound } from './errors.js';
import { describeRoute, validate } from './middleware.js';
import { groupName, limitQuery, seqString } from './schemas.js';
import { audit, idCursor } from './audit.js';
import { listDeviceEvents } from '../fleet/events-store.js';
import { ATTENTION_REASONS, DEVICE_STATES, deviceBasics, queryDevices } from '../fleet/device-query.js';
import { RESOLUTIONS, telemetrySeries } from '../fleet/telemetry-history.js';

export const provisionBodySchema = z.strictObject({
  id: deviceId.superRefine((id, ctx) => {
    const why = reservedDeviceId(id);
    if (why) ctx.addIssue({ code: 'custom', message: why });
  }),
  groups: z
    .array(groupName)
    .max(32)
    .default([])
    .transform((g) => [...new Set(g)]),
});

export const deviceParamSchema = z.strictObject({ id: deviceId });

export const deviceSchema = z.strictObject({
  id: z.string(),
  groups: z.array(z.string()),
  /** `never_seen` until the first status message. */
  status: z.enum(['online', 'offline', 'never_seen', 'revoked']),
  online: z.boolean(),
  lastSeen: z.string().nullable(),
  running: z.strictObject({ model: z.string().nullable(), release: releaseSeq, sha256: sha256Hex.nullable() }).nullable(),
  desiredRelease: releaseSeq.nullable(),
  revoked: z.boolean(),
  /** What the device said in its last online status (shared/protocol/compat.ts); protocol 1 and none before. */
  protocol: z.strictObject({ version: z.number().int(), capabilities: z.array(z.string()) }),
  trust: z.strictObject({ keysetVersion: z.number().int().nullable(), state: z.string() }).nullable(),
  degraded: z.string().nullable(),
  /** status.agent (`apprentice-edge/<version>`) and status.platform of the last online status (issue 14). */
  agent: z.string().nullable(),
  platform: z.string().nullable(),
  createdAt: z.string(),
});
export const deviceDetailSchema = deviceSchema.extend({ telemetry: telemetrySchema.nullable() });
export const deviceListItemSchema = deviceSchema.extend({
  /** The last telemetry's health (ok | degraded | no_model); null before any telemetry. */
  health: z.string().nullable(),
  /** Why the device needs attention (the overview's tile); empty when it does not. */
  attention: z.array(z.enum(ATTENTION_REASONS)),
});

export const deviceListQuerySchema = z.strictObject({
  group: groupName.optional(),
  state: z.enum(DEVICE_STATES).optional(),
  release: seqString.optional(),
  q: z.string().min(1).max(64).optional(),
  limit: limitQuery,
  cursor: deviceId.optional(),
});

export const deviceEventSchema = z.strictObject({
  id: z.number().int(),
  deviceId: z.string(),
  at: z.string(),
  receivedAt: z.string(),
  source: z.string(),
  type: z.string(),
  model: z.string().nullable(),
  release: z.number().int().nullable(),
  sha256: z.string().nullable(),
  reason: z.string().nullable(),
  detail: z.string().nullable(),
});

export const telemetryPointSchema = z.strictObject({
  at: z.string(),
  samples: z.number().int(),
  latencyP50: z.number().nullable(),
  latencyP95: z.number().nullable(),
  requests: z.number().int(),
  errors: z.number().int(),
  rssBytes: z.number().int().nullable(),
  outboxDepth: z.number().int().nullable(),
  outboxDropped: z.number().int(),
});

export const telemetryQuerySchema = z.strictObject({
  resolution: z.enum(RESOLUTIONS).default('1m'),
  since: z.iso.datetime({ offset: true }).optional(),
});
export type DeviceView = z.infer<typeof deviceSchema>;

const errors = { 400: { description: 'invalid request', schema: errorBodySchema }, 404: { description: 'no such device', schema: errorBodySchema } };

function view(row: DeviceRow, model: string | null): DeviceView {
  return {
    ...deviceBasics(row, model),
    createdAt: row.createdAt,
  };
}

/** A device with its running release's model (the registry's query builder: awaited on either dialect). */
async function deviceRow(ctx: ApiContext, id: string) {
  const { devices, releases } = ctx.registry.t;
  const [row] = await ctx.registry.q.select({ device: devices, model: releases.model }).from(devices).leftJoin(releases, eq(releases.seq, devices.runningSeq)).where(eq(devices.id, id));
  return row;
}

/**
 * `/v1/devices`: provisioning (the MQTT password is generated here, returned once, and stored only as its
 * Mosquitto `$7$` hash — cloud/provision/passwd.ts), listing, status, revocation.
 */
export function deviceRoutes(ctx: ApiContext): Hono {
  const { devices } = ctx.registry.t;
  const known = async (id: string): Promise<void> => {
    if ((await ctx.registry.q.select({ id: devices.id }).from(devices).where(eq(devices.id, id))).length === 0) throw notFound(`device ${id}`, 'id');
  };
  return new Hono()
    .post(
      '/',
      describeRoute({
        summary: 'Provision a device; returns its edge config bundle (with the MQTT password) exactly once',
        responses: { 201: { description: 'the edge config bundle', schema: provisionBundleSchema }, 409: { description: 'the device id exists (also when revoked)', schema: errorBodySchema } },
      }),
      validate('json', provisionBodySchema),
      async (c) => {
        const { id, groups } = c.req.valid('json');
        const [exists] = await ctx.registry.q.select({ revoked: devices.revoked }).from(devices).where(eq(devices.id, id));
        const taken = () => conflict('device_exists', `device ${id} already exists${exists?.revoked ? ' (revoked; provision it under a new id)' : ''}`, 'id');
        if (exists) throw taken();
        const password = generatePassword();
        const trustedKeys = ctx.keys.trusted();
        // Provisioned concurrently under the same id: nothing inserted, the loser gets the 409.
        const inserted = await ctx.registry.q.insert(devices).values({ id, groups, credentialHash: hashPassword(password) }).onConflictDoNothing({ target: devices.id }).returning({ id: devices.id });
        if (inserted.length === 0) throw taken();
        ctx.log.info({ device: id, groups }, 'device provisioned');
        await audit(ctx, c, { action: 'device.create', target: id, detail: { groups } });
        if (ctx.fleet) {
          // The bundle is the only copy of the password: a failing hook must not lose it.
          await ctx.fleet.onDeviceProvisioned(id, groups).catch((err: unknown) => ctx.log.error({ err, device: id }, 'cloud/api fleet.onDeviceProvisioned failed'));
        }
        const published = ctx.trust.published();
        const root = published?.keyset.root;
        const bundle: ProvisionBundle = {
          version: BUNDLE_VERSION, deviceId: id, mqtt: { url: ctx.broker.publicUrl, username: id, password }, trustedKeys,
          ...(root ? { rootKey: { keyId: root.keyId, publicKeyPem: root.publicKeyPem } } : {}),
          // The current key set too: a device provisioned after a rotation trusts the new keys from its first start.
          ...(published ? { keyset: { keyset: published.keyset, signatures: published.signatures } } : {}),
        };
        c.header('Cache-Control', 'no-store');
        c.header('Location', `/v1/devices/${id}`);
        return c.json(bundle, 201);
      },
    )
    .get(
      '/',
      describeRoute({
        summary: 'List devices, filtered and paginated on the server (ordered by id; pass nextCursor as cursor for the next page)',
        description: 'state: online | offline | never_seen | revoked | attention (failed or quarantined in a rollout, rolled back, unhealthy telemetry, outbox dropping, trust_stale).',
        responses: {
          200: { description: 'one page of devices', schema: z.object({ devices: z.array(deviceListItemSchema), nextCursor: z.string().nullable(), total: z.number().int() }) },
          400: { description: 'invalid query', schema: errorBodySchema },
        },
      }),
      validate('query', deviceListQuerySchema),
      async (c) => {
        const { limit = 100, ...f } = c.req.valid('query');
        return c.json(await queryDevices(ctx.registry, { ...f, limit, now: ctx.clock() }));
      },
    )
    .get(
      '/:id/events',
      describeRoute({
        summary: "A device's events (installed, rejected, rolled back, committed, and the cloud's notes), newest first; page with before = nextBefore",
        responses: { 200: { description: 'events', schema: z.object({ events: z.array(deviceEventSchema), nextBefore: z.number().int().nullable() }) }, ...errors },
      }),
      validate('param', deviceParamSchema),
      validate('query', z.strictObject({ limit: limitQuery, before: idCursor })),
      async (c) => {
        const { id } = c.req.valid('param');
        await known(id);
        const { limit = 100, before } = c.req.valid('query');
        const events = await listDeviceEvents(ctx.registry, { deviceId: id, limit, ...(before !== undefined ? { before } : {}) });
        return c.json({ events, nextBefore: events.length === limit ? events[events.length - 1]!.id : null });
      },
    )
    .get(
      '/:id/telemetry',
      describeRoute({
        summary: "A device's telemetry history: 1-minute buckets for 24 h (resolution=1m) or 1-hour buckets for 30 days (1h), oldest first",
        responses: { 200: { description: 'the series', schema: z.object({ deviceId: z.string(), resolution: z.enum(RESOLUTIONS), points: z.array(telemetryPointSchema) }) }, ...errors },
      }),
      validate('param', deviceParamSchema),
      validate('query', telemetryQuerySchema),
      async (c) => {
        const { id } = c.req.valid('param');
        await known(id);
        const { resolution, since } = c.req.valid('query');
        const points = await telemetrySeries(ctx.registry, id, { resolution, now: ctx.clock(), ...(since ? { since: new Date(since) } : {}) });
        return c.json({ deviceId: id, resolution, points });
      },
    )
    .get(
      '/:id',
      describeRoute({ summary: 'One device: status, running release, last telemetry', responses: { 200: { description: 'the device', schema: deviceDetailSchema }, ...errors } }),
      validate('param', deviceParamSchema),
      async (c) => {
        const { id } = c.req.valid('param');
        const row = await deviceRow(ctx, id);
        if (!row) throw notFound(`device ${id}`, 'id');
        const telemetry = telemetrySchema.safeParse(row.device.lastTelemetry);
        return c.json({ ...view(row.device, row.model), telemetry: telemetry.success ? telemetry.data : null });
      },
    )
    .delete(
      '/:id',
      describeRoute({
        summary: 'Revoke a device: it is dropped from the broker password file at the next `apprentice broker-auth`',
        description: 'Its retained desired and agent releases are cleared from the broker: at once by one process; on a cluster (issue 15) by the leader within a tick, whichever replica took the call.',
        responses: { 200: { description: 'the revoked device', schema: deviceSchema }, ...errors },
      }),
      validate('param', deviceParamSchema),
      async (c) => {
        const { id } = c.req.valid('param');
        const before = await deviceRow(ctx, id);
        if (!before) throw notFound(`device ${id}`, 'id');
        // Idempotent: revoking twice answers the same and notifies the fleet once.
        if (!before.device.revoked) {
          await ctx.registry.q.update(devices).set({ revoked: true, online: false }).where(eq(devices.id, id));
          ctx.log.info({ device: id }, 'device revoked');
          await audit(ctx, c, { action: 'device.revoke', target: id });
          if (ctx.fleet) await ctx.fleet.onDeviceRevoked(id).catch((err: unknown) => ctx.log.error({ err, device: id }, 'cloud/api fleet.onDeviceRevoked failed'));
        }
        const row = (await deviceRow(ctx, id))!;
        return c.json(view(row.device, row.model));
      },
    );
}
