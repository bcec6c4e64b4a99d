import { timingSafeEqual, createHash } from 'node:crypto';
import type { AedesOptions } from 'aedes';
import { eq } from 'drizzle-orm';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import { DEVICE_READABLE_KINDS, DEVICE_WRITABLE_KINDS, parseTopic, TOPIC_PREFIX, topics } from '../../shared/protocol/topics.js';
import { LEGACY_EDGE_CLIENT_PREFIX } from '../provision/reserved.js';
import { verifyPassword } from '../provision/passwd.js';
import type { StoreRegistry } from '../registry/open.js';

const DEVICE_WRITABLE = new Set<string>(DEVICE_WRITABLE_KINDS);
const DEVICE_READABLE = new Set<string>(DEVICE_READABLE_KINDS);
/** Global cloud-written topics every device may read (never write). */
const GLOBAL_READABLE = new Set([topics.keyset(), topics.cloudInfo()]);

/** CONNACK return codes of MQTT 3.1.1 [MQTT-3.2.2.3]. */
const IDENTIFIER_REJECTED = 2;
const SERVER_UNAVAILABLE = 3;
const BAD_CREDENTIALS = 4;

function sameSecret(a: string, b: string): boolean {
  // Compare digests so neither content nor length leaks through timing.
  return timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest());
}

function refusal(message: string, returnCode: number): never {
  return Object.assign(new Error(message), { returnCode }) as never;
}

export interface EmbeddedBrokerAuthOptions {
  registry: StoreRegistry;
  cloudUser: string;
  cloudPassword: string;
  log?: Logger;
}

/**
 * Authentication and ACL for the embedded aedes broker, matching deploy/mosquitto/acl: the cloud user
 * may do anything under the protocol prefix; a device (username = device id, password as provisioned,
 * checked against the registry's `$7$` hash) may publish only its own status/telemetry/events/examples
 * and subscribe only to its own `desired` and `receipts`, to the key set, the cloud info and artifacts.
 * Revoked devices are refused at connect.
 *
 * Client identity (issue 10): a device's client id must equal its username, so no device can take over
 * another's session, nor the cloud's (aedes closes the older connection of a client id only after
 * authentication succeeds). For one release the legacy `apprentice-edge-<username>` is accepted too,
 * with a deprecation warning. The cloud user may not use a device's id or the legacy edge prefix.
 * Devices may retain only their status (the last will and online state); a retained telemetry or
 * example would be replayed to every later subscriber.
 *
 * A refused PUBLISH closes the device's connection (aedes, [MQTT-3.3.5-2]); a refused subscription
 * is answered with SUBACK 0x80.
 */
export function embeddedBrokerAuth({ registry, cloudUser, cloudPassword, log = silentLogger }: EmbeddedBrokerAuthOptions): AedesOptions {
  const isCloud = (client: { id: string } & Record<string, unknown>) => (client as { apprenticeRole?: string }).apprenticeRole === 'cloud';
  const deviceOf = (client: Record<string, unknown>) => client.apprenticeDevice as string | undefined;
  const deprecated = new Set<string>();
  return {
    authenticate: (client, username, password, done) => {
      const pw = password ? Buffer.from(password).toString('utf8') : '';
      if (!username) return done(refusal('username required', BAD_CREDENTIALS), false);
      const c = client as unknown as Record<string, unknown> & { id: string };
      const { devices } = registry.t;
      void (async () => {
        if (username === cloudUser) {
          if (!sameSecret(pw, cloudPassword)) return done(refusal('bad credentials', BAD_CREDENTIALS), false);
          const taken = c.id.startsWith(LEGACY_EDGE_CLIENT_PREFIX) || (await registry.q.select({ id: devices.id }).from(devices).where(eq(devices.id, c.id))).length > 0;
          if (taken) {
            log.warn({ clientId: c.id }, 'broker/cloud-client-id-refused: a device id or the edge prefix');
            return done(refusal(`client id ${c.id} belongs to a device`, IDENTIFIER_REJECTED), false);
          }
          c.apprenticeRole = 'cloud';
          return done(null, true);
        }
        const [row] = await registry.q.select({ hash: devices.credentialHash, revoked: devices.revoked }).from(devices).where(eq(devices.id, username));
        if (!(row && !row.revoked && verifyPassword(pw, row.hash))) return done(refusal('bad credentials', BAD_CREDENTIALS), false);
        if (c.id !== username) {
          if (c.id !== `${LEGACY_EDGE_CLIENT_PREFIX}${username}`) {
            log.warn({ username, clientId: c.id }, 'broker/client-id-refused: a device must connect with its device id as client id');
            return done(refusal(`client id must equal the username ${username}`, IDENTIFIER_REJECTED), false);
          }
          if (!deprecated.has(username) && deprecated.size < 10_000) {
            deprecated.add(username);
            log.warn({ username, clientId: c.id }, 'broker/legacy-client-id: deprecated, accepted for one release; upgrade the daemon (it connects with its device id)');
          }
        }
        c.apprenticeDevice = username;
        return done(null, true);
      })().catch((err: unknown) => {
        // The registry unreachable: refuse for now (the client reconnects), logged.
        log.error({ err, username }, 'broker/auth-read-failed');
        done(refusal('server unavailable', SERVER_UNAVAILABLE), false);
      });
    },
    authorizePublish: (client, packet, done) => {
      if (!client) return done(new Error('no client'));
      const c = client as unknown as Record<string, unknown> & { id: string };
      if (isCloud(c)) return done(packet.topic.startsWith(`${TOPIC_PREFIX}/`) ? null : new Error('outside the protocol prefix'));
      const t = parseTopic(packet.topic);
      const ok = t?.type === 'device' && t.deviceId === deviceOf(c) && DEVICE_WRITABLE.has(t.kind);
      if (!ok) return done(new Error(`device ${deviceOf(c)} may not publish to ${packet.topic}`));
      if (packet.retain && t.kind !== 'status') {
        log.warn({ deviceId: deviceOf(c), topic: packet.topic }, 'broker/retained-publish-refused');
        return done(new Error(`device ${deviceOf(c)} may retain only its status`));
      }
      done(null);
    },
    authorizeSubscribe: (client, sub, done) => {
      if (!client) return done(new Error('no client'), null);
      const c = client as unknown as Record<string, unknown> & { id: string };
      if (isCloud(c)) return done(null, sub);
      const id = deviceOf(c);
      const topic = sub.topic;
      // A filter with `+` never parses as a device topic, so a device cannot read others' topics with it.
      const t = parseTopic(topic);
      const own = id !== undefined && t?.type === 'device' && t.deviceId === id && DEVICE_READABLE.has(t.kind);
      const artifacts = topic.startsWith(`${TOPIC_PREFIX}/artifacts/`) && !topic.includes('#');
      // Returning null as the subscription grants nothing (SUBACK 0x80) without disconnecting.
      done(null, own || artifacts || GLOBAL_READABLE.has(topic) ? sub : null);
    },
  };
}
