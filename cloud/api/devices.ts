import { asc, eq } from 'drizzle-orm';
import { Hono } from 'hono';
import { z } from 'zod';
import { deviceId, releaseSeq, sha256Hex, telemetrySchema } from '../../shared/protocol/schemas.js';
import { BUNDLE_VERSION, provisionBundleSchema, type ProvisionBundle } from '../provision/bundle.js';
import { generatePassword, hashPassword } from '../provision/passwd.js';
import { reservedDeviceId } from '../provision/reserved.js';
import { devices, releases, type DeviceRow } from '../registry/schema.js';
import { isUniqueViolation, type ApiContext } from './context.js';
import { conflict, errorBodySchema, notFound } from './errors.js';
import { describeRoute, validate } from './middleware.js';
import { groupName } from './schemas.js';

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
  createdAt: z.string(),
});
export const deviceDetailSchema = deviceSchema.extend({ telemetry: telemetrySchema.nullable() });
export type DeviceView = z.infer<typeof deviceSchema>;

const errors = { 400: { description: 'invalid request', schema: errorBodySchema }, 404: { description: 'no such device', schema: errorBodySchema } };

function view(row: DeviceRow, model: string | null): DeviceView {
  return {
    id: row.id,
    groups: row.groups as string[],
    status: row.revoked ? 'revoked' : row.online ? 'online' : row.lastSeen ? 'offline' : 'never_seen',
    online: row.online,
    lastSeen: row.lastSeen,
    running: row.runningSeq === null ? null : { model, release: row.runningSeq, sha256: row.runningSha256 },
    desiredRelease: row.desiredSeq,
    revoked: row.revoked,
    protocol: { version: row.protocolVersion ?? 1, capabilities: row.capabilities ?? [] },
    trust: row.trust ?? null,
    degraded: row.degraded,
    createdAt: row.createdAt,
  };
}

function select(ctx: ApiContext) {
  return ctx.db.select({ device: devices, model: releases.model }).from(devices).leftJoin(releases, eq(releases.seq, devices.runningSeq));
}

/**
 * `/v1/devices`: provisioning (the MQTT password is generated here, returned once, and stored only as its
 * Mosquitto `$7$` hash — cloud/provision/passwd.ts), listing, status, revocation.
 */
export function deviceRoutes(ctx: ApiContext): Hono {
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
        const exists = ctx.db.select({ revoked: devices.revoked }).from(devices).where(eq(devices.id, id)).get();
        const taken = () => conflict('device_exists', `device ${id} already exists${exists?.revoked ? ' (revoked; provision it under a new id)' : ''}`, 'id');
        if (exists) throw taken();
        const password = generatePassword();
        const trustedKeys = ctx.keys.trusted();
        try {
          ctx.db.insert(devices).values({ id, groups, credentialHash: hashPassword(password) }).run();
        } catch (err) {
          if (isUniqueViolation(err)) throw taken();
          throw err;
        }
        ctx.log.info({ device: id, groups }, 'device provisioned');
        if (ctx.fleet) {
          // The bundle is the only copy of the password: a failing hook must not lose it.
          await ctx.fleet.onDeviceProvisioned(id, groups).catch((err: unknown) => ctx.log.error({ err, device: id }, 'cloud/api fleet.onDeviceProvisioned failed'));
        }
        const root = ctx.trust.published()?.keyset.root;
        const bundle: ProvisionBundle = { version: BUNDLE_VERSION, deviceId: id, mqtt: { url: ctx.broker.publicUrl, username: id, password }, trustedKeys, ...(root ? { rootKey: { keyId: root.keyId, publicKeyPem: root.publicKeyPem } } : {}) };
        c.header('Cache-Control', 'no-store');
        c.header('Location', `/v1/devices/${id}`);
        return c.json(bundle, 201);
      },
    )
    .get('/', describeRoute({ summary: 'List devices with status, running release, online, last seen', responses: { 200: { description: 'devices', schema: z.object({ devices: z.array(deviceSchema) }) } } }), (c) => {
      const rows = select(ctx).orderBy(asc(devices.id)).all();
      return c.json({ devices: rows.map((r) => view(r.device, r.model)) });
    })
    .get(
      '/:id',
      describeRoute({ summary: 'One device: status, running release, last telemetry', responses: { 200: { description: 'the device', schema: deviceDetailSchema }, ...errors } }),
      validate('param', deviceParamSchema),
      (c) => {
        const { id } = c.req.valid('param');
        const row = select(ctx).where(eq(devices.id, id)).get();
        if (!row) throw notFound(`device ${id}`, 'id');
        const telemetry = telemetrySchema.safeParse(row.device.lastTelemetry);
        return c.json({ ...view(row.device, row.model), telemetry: telemetry.success ? telemetry.data : null });
      },
    )
    .delete(
      '/:id',
      describeRoute({
        summary: 'Revoke a device: it is dropped from the broker password file at the next `apprentice broker-auth`',
        responses: { 200: { description: 'the revoked device', schema: deviceSchema }, ...errors },
      }),
      validate('param', deviceParamSchema),
      async (c) => {
        const { id } = c.req.valid('param');
        const before = select(ctx).where(eq(devices.id, id)).get();
        if (!before) throw notFound(`device ${id}`, 'id');
        // Idempotent: revoking twice answers the same and notifies the fleet once.
        if (!before.device.revoked) {
          ctx.db.update(devices).set({ revoked: true, online: false }).where(eq(devices.id, id)).run();
          ctx.log.info({ device: id }, 'device revoked');
          if (ctx.fleet) await ctx.fleet.onDeviceRevoked(id).catch((err: unknown) => ctx.log.error({ err, device: id }, 'cloud/api fleet.onDeviceRevoked failed'));
        }
        const row = select(ctx).where(eq(devices.id, id)).get()!;
        return c.json(view(row.device, row.model));
      },
    );
}
