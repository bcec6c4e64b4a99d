/**
 * Issue 15 item 2: the config of a replica. `cluster.enabled` and shared keys need what must be the same on
 * every replica from config (admin token, shared key dir, external broker); one process is unchanged.
 */
import { describe, expect, it } from 'vitest';
import { loadCloudConfig } from '../../../cloud/config/load.js';
import { CLUSTER_SESSION_EXPIRY_SECONDS, SINGLE_SESSION_EXPIRY_SECONDS, cloudConfigSchema, defaultReplicaId, keysMode, mqttSessionExpirySeconds } from '../../../cloud/config/schema.js';
import { UsageError } from '../../../shared/cli/errors.js';

const TOKEN = 'cluster-admin-token-0123456789';
const PG_URL = 'postgres://apprentice:secret@db:5432/apprentice';
/** Everything a replica needs, from the environment. */
const REPLICA_ENV = {
  APPRENTICE_CLUSTER_ENABLED: '1',
  APPRENTICE_KEYS_SHARED_DIR: '/k',
  APPRENTICE_ADMIN_TOKEN: TOKEN,
  APPRENTICE_MQTT_URL: 'mqtt://b:1883',
  APPRENTICE_MQTT_SHARED_SUBSCRIPTIONS: '1',
  APPRENTICE_REGISTRY_URL: PG_URL,
};

function refusal(env: Record<string, string>): string {
  try {
    loadCloudConfig({ env });
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error('config accepted');
}

describe('cluster config', () => {
  it('one process by default: cluster off, local keys, replica id from the host name', () => {
    const c = loadCloudConfig({ env: {} });
    expect(c.cluster).toEqual({ enabled: false, replicaId: defaultReplicaId() });
    expect(c.cluster.replicaId).toMatch(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,46}$/);
    expect(keysMode(c)).toBe('local');
    expect(c.api.adminToken).toBeUndefined();
  });

  it('a replica from the environment: cluster on, shared keys implied, token and broker given', () => {
    const c = loadCloudConfig({
      env: {
        APPRENTICE_CLUSTER_ENABLED: '1',
        APPRENTICE_REPLICA_ID: 'cloud-2',
        APPRENTICE_KEYS_SHARED_DIR: '/run/secrets/keys',
        APPRENTICE_ADMIN_TOKEN: TOKEN,
        APPRENTICE_MQTT_URL: 'mqtt://mosquitto:1883',
        APPRENTICE_MQTT_SHARED_SUBSCRIPTIONS: '1',
        APPRENTICE_REGISTRY_URL: PG_URL,
      },
    });
    expect(c.cluster).toEqual({ enabled: true, replicaId: 'cloud-2' });
    expect(c.registry.url).toBe(PG_URL);
    expect(c.keys.sharedDir).toBe('/run/secrets/keys');
    expect(keysMode(c)).toBe('shared');
  });

  it('shared keys are implied by a shared dir alone, and can be asked for explicitly', () => {
    expect(keysMode(cloudConfigSchema.parse({ keys: { sharedDir: '/k' }, api: { adminToken: TOKEN } }))).toBe('shared');
    expect(refusal({ APPRENTICE_KEYS_MODE: 'shared', APPRENTICE_ADMIN_TOKEN: TOKEN })).toMatch(/keys\.sharedDir: required with keys\.mode "shared"/);
    expect(refusal({ APPRENTICE_KEYS_MODE: 'remote' })).toMatch(/keys\.mode/);
  });

  it('cluster.enabled without an admin token is refused, naming the field and the variable', () => {
    const msg = refusal({ APPRENTICE_CLUSTER_ENABLED: 'true', APPRENTICE_KEYS_SHARED_DIR: '/k', APPRENTICE_MQTT_URL: 'mqtt://b:1883' });
    expect(msg).toMatch(/api\.adminToken: required with cluster\.enabled \(set api\.adminToken or APPRENTICE_ADMIN_TOKEN, the same on every replica\)/);
    // Shared keys alone need it too: a token generated per data dir would differ between replicas.
    expect(refusal({ APPRENTICE_KEYS_SHARED_DIR: '/k' })).toMatch(/api\.adminToken: required with keys\.mode "shared"/);
  });

  it('cluster.enabled needs the shared key dir, an external broker and shared subscriptions, and refuses local keys', () => {
    const msg = refusal({ APPRENTICE_CLUSTER_ENABLED: '1', APPRENTICE_ADMIN_TOKEN: TOKEN });
    expect(msg).toMatch(/keys\.sharedDir: required with cluster\.enabled/);
    expect(msg).toMatch(/mqtt\.url: required with cluster\.enabled/);
    expect(msg).toMatch(/mqtt\.sharedSubscriptions: must be true with cluster\.enabled/);
    expect(refusal({ ...REPLICA_ENV, APPRENTICE_KEYS_MODE: 'local' })).toMatch(
      /keys\.mode: must be "shared" with cluster\.enabled/,
    );
  });

  it('cluster.enabled on SQLite (no registry.url) is refused, naming both settings; with the URL it loads', () => {
    const { APPRENTICE_REGISTRY_URL: _url, ...onSqlite } = REPLICA_ENV;
    const msg = refusal(onSqlite);
    expect(msg.split('\n').filter((l) => l.includes(':')).slice(1)).toEqual([expect.stringMatching(/^registry\.url: required with cluster\.enabled \(APPRENTICE_REGISTRY_URL, a postgres:\/\/ URL\): replicas elect their leader/)]);
    expect(loadCloudConfig({ env: REPLICA_ENV }).registry.url).toBe(PG_URL);
    // One process on SQLite needs none of it.
    expect(loadCloudConfig({ env: {} }).registry.url).toBeUndefined();
  });

  it('MQTT session expiry: a week for one process, minutes for a replica, configurable on MQTT 5 only', () => {
    expect(mqttSessionExpirySeconds(loadCloudConfig({ env: {} }))).toBe(SINGLE_SESSION_EXPIRY_SECONDS);
    const replica = loadCloudConfig({ env: REPLICA_ENV });
    expect(mqttSessionExpirySeconds(replica)).toBe(CLUSTER_SESSION_EXPIRY_SECONDS);
    expect(CLUSTER_SESSION_EXPIRY_SECONDS).toBeLessThan(SINGLE_SESSION_EXPIRY_SECONDS);
    const set = loadCloudConfig({ env: { ...REPLICA_ENV, APPRENTICE_MQTT_SESSION_EXPIRY_SECONDS: '120' }, overrides: { 'mqtt.protocolVersion': 5 } });
    expect(mqttSessionExpirySeconds(set)).toBe(120);
    expect(refusal({ APPRENTICE_MQTT_SESSION_EXPIRY_SECONDS: '120' })).toMatch(/mqtt\.sessionExpirySeconds: needs mqtt\.protocolVersion 5/);
    expect(refusal({ APPRENTICE_MQTT_SESSION_EXPIRY_SECONDS: 'soon' })).toMatch(/mqtt\.sessionExpirySeconds/);
    expect(() => cloudConfigSchema.parse({ mqtt: { protocolVersion: 5, sessionExpirySeconds: 5 } })).toThrow(/sessionExpirySeconds/);
  });

  it('refuses a boolean variable it cannot read and a replica id that is no MQTT client id', () => {
    expect(refusal({ APPRENTICE_CLUSTER_ENABLED: 'yes' })).toMatch(/cluster\.enabled/);
    expect(refusal({ APPRENTICE_REPLICA_ID: 'cloud 1' })).toMatch(/cluster\.replicaId: expected letters, digits/);
    expect(refusal({ APPRENTICE_REPLICA_ID: 'x'.repeat(48) })).toMatch(/cluster\.replicaId/);
  });
});
