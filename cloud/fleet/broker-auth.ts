import { timingSafeEqual, createHash } from 'node:crypto';
import type { AedesOptions } from 'aedes';
import { eq } from 'drizzle-orm';
import { DEVICE_READABLE_KINDS, DEVICE_WRITABLE_KINDS, parseTopic, TOPIC_PREFIX, topics } from '../../shared/protocol/topics.js';
import { verifyPassword } from '../provision/passwd.js';
import type { Registry } from '../registry/db.js';
import { devices } from '../registry/schema.js';

const DEVICE_WRITABLE = new Set<string>(DEVICE_WRITABLE_KINDS);
const DEVICE_READABLE = new Set<string>(DEVICE_READABLE_KINDS);
/** Global cloud-written topics every device may read (never write). */
const GLOBAL_READABLE = new Set([topics.keyset(), topics.cloudInfo()]);

function sameSecret(a: string, b: string): boolean {
  // Compare digests so neither content nor length leaks through timing.
  return timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest());
}

/**
 * Authentication and ACL for the embedded aedes broker, matching deploy/mosquitto/acl: the cloud user
 * may do anything under the protocol prefix; a device (username = device id, password as provisioned,
 * checked against the registry's `$7$` hash) may publish only its own status/telemetry/events/examples
 * and subscribe only to its own `desired` and `receipts`, to the key set, the cloud info and artifacts. Revoked devices are refused at connect.
 * A refused PUBLISH closes the device's connection (aedes, [MQTT-3.3.5-2]); a refused subscription
 * is answered with SUBACK 0x80.
 */
export function embeddedBrokerAuth({ registry, cloudUser, cloudPassword }: { registry: Registry; cloudUser: string; cloudPassword: string }): AedesOptions {
  const isCloud = (client: { id: string } & Record<string, unknown>) => (client as { apprenticeRole?: string }).apprenticeRole === 'cloud';
  const deviceOf = (client: Record<string, unknown>) => client.apprenticeDevice as string | undefined;
  return {
    authenticate: (client, username, password, done) => {
      const pw = password ? Buffer.from(password).toString('utf8') : '';
      if (!username) return done(Object.assign(new Error('username required'), { returnCode: 4 }) as never, false);
      if (username === cloudUser) {
        const ok = sameSecret(pw, cloudPassword);
        if (ok) (client as unknown as Record<string, unknown>).apprenticeRole = 'cloud';
        return done(ok ? null : (Object.assign(new Error('bad credentials'), { returnCode: 4 }) as never), ok);
      }
      const row = registry.db.select({ hash: devices.credentialHash, revoked: devices.revoked }).from(devices).where(eq(devices.id, username)).get();
      const ok = !!row && !row.revoked && verifyPassword(pw, row.hash);
      if (ok) (client as unknown as Record<string, unknown>).apprenticeDevice = username;
      return done(ok ? null : (Object.assign(new Error('bad credentials'), { returnCode: 4 }) as never), ok);
    },
    authorizePublish: (client, packet, done) => {
      if (!client) return done(new Error('no client'));
      const c = client as unknown as Record<string, unknown> & { id: string };
      if (isCloud(c)) return done(packet.topic.startsWith(`${TOPIC_PREFIX}/`) ? null : new Error('outside the protocol prefix'));
      const t = parseTopic(packet.topic);
      const ok = t?.type === 'device' && t.deviceId === deviceOf(c) && DEVICE_WRITABLE.has(t.kind);
      done(ok ? null : new Error(`device ${deviceOf(c)} may not publish to ${packet.topic}`));
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
