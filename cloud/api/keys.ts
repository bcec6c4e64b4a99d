import { Hono } from 'hono';
import { z } from 'zod';
import { UsageError } from '../../shared/cli/errors.js';
import { KeyStoreError } from '../keys/store.js';
import { audit } from './audit.js';
import type { ApiContext } from './context.js';
import { ApiError, errorBodySchema, notFound } from './errors.js';
import { describeRoute, validate } from './middleware.js';

export const keyInfoSchema = z.strictObject({
  keyId: z.string(),
  status: z.enum(['active', 'trusted', 'retired']),
  source: z.enum(['generated', 'file', 'env']),
  createdAt: z.string(),
  retiredAt: z.string().optional(),
  publicKeyPem: z.string(),
});

const keyParam = z.strictObject({ keyId: z.string().regex(/^[0-9a-f]{16}$/, 'expected a 16-hex-digit key id') });
const errors = { 404: { description: 'unknown key', schema: errorBodySchema }, 409: { description: 'not allowed in the current state (key_conflict)', schema: errorBodySchema } };

/**
 * `/v1/keys`: the release-signing keys (cloud/keys). Public halves only. Devices trust only the keys in
 * their config bundle: stage a key (`rotate` with `activate: false`), get it into device configs, then
 * activate it, and retire the old one once nothing needs it.
 */
export function keyRoutes(ctx: ApiContext): Hono {
  /** KeyStoreError is an operator mistake here (retire the active key, ...): 409 with its message. */
  const guarded = <T>(fn: () => T): T => {
    try {
      return fn();
    } catch (err) {
      if (err instanceof KeyStoreError) throw new ApiError(409, 'key_conflict', err.message, 'keyId');
      throw err;
    }
  };
  const known = (keyId: string) => {
    if (!ctx.keys.list().some((k) => k.keyId === keyId)) throw notFound(`key ${keyId}`, 'keyId');
  };
  return new Hono()
    .get(
      '/keyset',
      describeRoute({ summary: 'The published root-signed key set (404 before the first)', responses: { 200: { description: 'the signed key set' }, 404: { description: 'none published', schema: errorBodySchema } } }),
      (c) => {
        const ks = ctx.trust.published();
        if (!ks) throw notFound('published key set', undefined, 'keyset_missing');
        return c.json(ks);
      },
    )
    .put(
      '/keyset',
      describeRoute({
        summary: 'Upload a root-signed key set (from `keys sign-keyset`); checked like a device would, then retained on trust/keyset',
        responses: { 200: { description: 'published', schema: z.strictObject({ version: z.number().int() }) }, 400: { description: 'not JSON', schema: errorBodySchema }, 409: { description: 'the key set is shared by several replicas (keys.sharedDir): publish it with `apprentice keys publish-keyset --keys-dir` (keyset_shared)', schema: errorBodySchema }, 422: { description: 'refused (not a signed key set, wrong root, older version, ...)', schema: errorBodySchema } },
      }),
      async (c) => {
        let body: unknown;
        try {
          body = await c.req.json();
        } catch (err) {
          throw new ApiError(400, 'invalid_json', `request body is not JSON: ${(err as Error).message}`.slice(0, 300));
        }
        let out: { version: number };
        try {
          out = ctx.trust.publish(body);
        } catch (err) {
          if (err instanceof UsageError) throw new ApiError(422, 'keyset_refused', err.message.slice(0, 500), 'keyset');
          throw err;
        }
        ctx.log.info({ version: out.version }, 'key set published');
        return c.json({ version: out.version });
      },
    )
    .get('/', describeRoute({ summary: 'Signing keys: active, trusted (in new device bundles), retired', responses: { 200: { description: 'keys', schema: z.object({ keys: z.array(keyInfoSchema) }) } } }), (c) =>
      c.json({ keys: ctx.keys.list() }),
    )
    .post(
      '/rotate',
      describeRoute({ summary: 'Generate a key; it signs from now on unless activate is false (then it is only trusted)', responses: { 201: { description: 'the new key', schema: keyInfoSchema }, 409: errors[409] } }),
      validate('json', z.strictObject({ activate: z.boolean().default(true) }), { optional: true }),
      async (c) => {
        const { activate } = c.req.valid('json');
        const key = guarded(() => ctx.keys.rotate({ activate }));
        ctx.log.info({ keyId: key.keyId, activate }, 'signing key rotated');
        await audit(ctx, c, { action: 'keys.rotate', target: key.keyId, detail: { activate } });
        return c.json(key, 201);
      },
    )
    .post(
      '/:keyId/activate',
      describeRoute({ summary: 'Make a trusted key the signing key', responses: { 200: { description: 'the key', schema: keyInfoSchema }, ...errors } }),
      validate('param', keyParam),
      validate('json', z.strictObject({}), { optional: true }),
      async (c) => {
        const { keyId } = c.req.valid('param');
        known(keyId);
        const key = guarded(() => ctx.keys.activate(keyId));
        ctx.log.info({ keyId }, 'signing key activated');
        await audit(ctx, c, { action: 'keys.activate', target: keyId });
        return c.json(key);
      },
    )
    .delete(
      '/:keyId',
      describeRoute({ summary: 'Retire a key: no longer trusted in new bundles, private key deleted', responses: { 200: { description: 'the retired key', schema: keyInfoSchema }, ...errors } }),
      validate('param', keyParam),
      async (c) => {
        const { keyId } = c.req.valid('param');
        known(keyId);
        const key = guarded(() => ctx.keys.retire(keyId));
        ctx.log.info({ keyId }, 'signing key retired');
        await audit(ctx, c, { action: 'keys.retire', target: keyId });
        return c.json(key);
      },
    );
}
