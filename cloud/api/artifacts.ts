import type { IncomingMessage } from 'node:http';
import { eq } from 'drizzle-orm';
import { Hono, type Context } from 'hono';
import { z } from 'zod';
import { verifyPassword } from '../provision/passwd.js';
import { ArtifactUnavailableError } from './artifact-store.js';
import type { ApiContext } from './context.js';
import { ApiError, errorBodySchema } from './errors.js';
import { constantTimeEqual, describeRoute, validate } from './middleware.js';
import { serveBytes } from './serve-bytes.js';

export const ARTIFACTS_PREFIX = '/v1/artifacts/';
const shaParam = z.strictObject({ sha256: z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lowercase hex digits (a sha256)') });
const CHALLENGE = 'Basic realm="apprentice", charset="UTF-8", Bearer realm="apprentice"';

/** The TCP peer of a request served by @hono/node-server; undefined in-process (`app.request`). */
export function socketAddress(c: Context): string | undefined {
  return (c.env as { incoming?: IncomingMessage } | undefined)?.incoming?.socket?.remoteAddress;
}

export function isLoopback(addr: string | undefined): boolean {
  if (!addr) return false;
  const v4 = addr.startsWith('::ffff:') ? addr.slice(7) : addr;
  return v4 === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4);
}

/**
 * Whether credentials on this request travelled safely: the peer is loopback, or a trusted proxy
 * that says the client spoke HTTPS (`X-Forwarded-Proto: https`, its first value).
 */
function securelyCarried(ctx: ApiContext, c: Context): { ok: boolean; peer: string | undefined } {
  const peer = ctx.artifacts.clientAddress(c);
  if (isLoopback(peer)) return { ok: true, peer };
  const norm = peer?.startsWith('::ffff:') ? peer.slice(7) : peer;
  const proto = c.req.header('x-forwarded-proto')?.split(',')[0]?.trim().toLowerCase();
  return { ok: norm !== undefined && ctx.artifacts.trustedProxies.includes(norm) && proto === 'https', peer };
}

const unauthorized = (message: string): ApiError => new ApiError(401, 'unauthorized', message, 'authorization', { 'WWW-Authenticate': CHALLENGE });

/** Who is asking: the admin (bearer token) or a device (HTTP Basic with its MQTT username and password). */
async function authenticate(ctx: ApiContext, header: string | undefined): Promise<{ who: 'admin' } | { who: 'device'; id: string }> {
  if (header === undefined) throw unauthorized('missing credentials (Authorization: Basic with the device\'s MQTT username and password, or Bearer ADMIN_TOKEN)');
  const bearer = /^Bearer[ \t]+([\x21-\x7e]+)[ \t]*$/i.exec(header);
  if (bearer) {
    if (!constantTimeEqual(bearer[1]!, ctx.artifacts.adminToken)) throw unauthorized('invalid token');
    return { who: 'admin' };
  }
  const basic = /^Basic[ \t]+([A-Za-z0-9+/]+={0,2})[ \t]*$/i.exec(header);
  if (!basic) throw unauthorized('malformed Authorization header (expected Basic BASE64(user:password) or Bearer TOKEN)');
  const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) throw unauthorized('malformed Basic credentials (expected BASE64 of user:password)');
  const id = decoded.slice(0, colon);
  const password = decoded.slice(colon + 1);
  const { devices } = ctx.registry.t;
  const [row] = id.length <= 128 ? await ctx.registry.q.select({ hash: devices.credentialHash, revoked: devices.revoked }).from(devices).where(eq(devices.id, id)) : [];
  // Same message for an unknown device, a revoked one and a wrong password.
  if (!row || row.revoked || !verifyPassword(password, row.hash)) throw unauthorized('invalid device credentials');
  return { who: 'device', id };
}

/**
 * `GET /v1/artifacts/{sha256}` (issue 10 item 8): a release artifact by content address, for devices'
 * HTTP source. Mounted outside the admin bearer check: it takes device credentials (HTTP Basic, the
 * MQTT username and password, checked against the registry) or the admin token. Credentials sent over
 * plain HTTP are refused (403 `insecure_transport`) unless the peer is loopback or one of
 * `api.trustedProxies` forwarding `X-Forwarded-Proto: https`.
 */
export function artifactRoutes(ctx: ApiContext): Hono {
  return new Hono().get(
    '/:sha256',
    describeRoute({
      summary: 'A release artifact by sha256, for devices (HTTP Basic: MQTT username and password) or the admin token. Range, If-Range, If-None-Match',
      public: true,
      responses: {
        200: { description: 'the whole file', contentType: 'application/octet-stream' },
        206: { description: 'the requested range (Content-Range)', contentType: 'application/octet-stream' },
        304: { description: 'If-None-Match matched' },
        400: { description: 'not a sha256', schema: errorBodySchema },
        401: { description: 'missing, malformed or invalid credentials', schema: errorBodySchema },
        403: { description: 'credentials over plain HTTP from outside loopback / trusted proxies', schema: errorBodySchema },
        404: { description: 'no artifact with this sha256', schema: errorBodySchema },
        416: { description: 'range not satisfiable', schema: errorBodySchema },
      },
    }),
    async (c, next) => {
      // Transport first: credentials that crossed the network in the clear are refused before they are looked at.
      const carried = securelyCarried(ctx, c);
      if (!carried.ok && c.req.header('authorization') !== undefined) {
        ctx.artifacts.refused('insecure_transport');
        ctx.log.warn({ peer: carried.peer, path: c.req.path }, 'cloud/api artifacts: credentials over plain HTTP refused');
        throw new ApiError(403, 'insecure_transport', 'credentials are accepted only over HTTPS (through a trusted proxy) or from loopback', 'authorization');
      }
      try {
        const who = await authenticate(ctx, c.req.header('authorization'));
        ctx.log.debug({ peer: carried.peer, client: who.who === 'device' ? who.id : 'admin', path: c.req.path }, 'cloud/api artifacts: request');
      } catch (err) {
        ctx.artifacts.refused('unauthorized');
        ctx.log.warn({ peer: carried.peer, reason: (err as Error).message }, 'cloud/api artifacts: refused');
        throw err;
      }
      return next();
    },
    validate('param', shaParam),
    async (c) => {
      const { sha256 } = c.req.valid('param');
      let art;
      try {
        art = await ctx.artifacts.store.get(sha256);
      } catch (err) {
        if (err instanceof ArtifactUnavailableError) throw new ApiError(500, 'artifact_unavailable', err.message);
        throw err;
      }
      if (!art) throw new ApiError(404, 'artifact_missing', `no artifact with sha256 ${sha256}`, 'sha256');
      return serveBytes(c, { sha256, size: art.size, name: art.name, read: art.read });
    },
  );
}
