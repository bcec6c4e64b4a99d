import type { StoreRegistry } from '../../cloud/registry/open.js';

/**
 * A fleet with one device per attention reason, plus healthy, offline, never-seen and revoked ones; releases 1
 * and 2 of `digits`, a live and an aborted rollout. Seeded through the registry of either dialect; the device list
 * and fleet summary tests (store and HTTP) read it at ATTENTION_FLEET_NOW.
 */
export const ATTENTION_FLEET_NOW = new Date('2026-11-30T12:00:00.000Z');

export async function seedAttentionFleet(reg: StoreRegistry): Promise<void> {
  const { models, releases, devices, rollouts, rolloutDevices } = reg.t;
  await reg.q.insert(models).values({ name: 'digits', inputSpec: {} as never, labels: [], teacher: {} as never, studentSpec: 'mlp', distillSettings: {} });
  for (const seq of [1, 2]) await reg.q.insert(releases).values({ model: 'digits', seq, sha256: String(seq).repeat(64), bytes: 1, quantization: 'int8', metrics: {}, manifest: {} as never, signature: {} as never, artifactPath: 'x' });
  const seen = '2026-11-30T11:59:00.000Z';
  const dev = (id: string, over: Partial<typeof devices.$inferInsert> = {}) => ({ id, groups: [] as string[], credentialHash: 'x', ...over });
  await reg.q.insert(devices).values([
    dev('ok-1', { groups: ['kitchen'], online: true, lastSeen: seen, runningSeq: 2, health: 'ok', agent: 'apprentice-edge/0.2.0', platform: 'linux-x64' }),
    dev('ok-2', { groups: ['kitchen', 'eu'], online: true, lastSeen: seen, runningSeq: 2, agent: 'apprentice-edge/0.2.0', platform: 'linux-x64' }),
    dev('off-1', { groups: ['eu'], online: false, lastSeen: '2026-11-29T00:00:00.000Z', runningSeq: 1, agent: 'apprentice-edge/0.1.0', platform: 'linux-x64' }),
    dev('new-1'),
    // The revoked device's agent version is not counted.
    dev('gone-1', { revoked: true, runningSeq: 1, lastSeen: seen, agent: 'apprentice-edge/0.1.0', platform: 'linux-x64' }),
    dev('sick-1', { online: true, lastSeen: seen, runningSeq: 1, health: 'degraded' }),
    dev('drop-1', { online: true, lastSeen: seen, runningSeq: 1, droppedAt: '2026-11-30T11:30:00.000Z' }),
    dev('drop-old', { online: true, lastSeen: seen, runningSeq: 1, droppedAt: '2026-11-30T10:00:00.000Z' }),
    dev('stale-1', { online: true, lastSeen: seen, trust: { keysetVersion: 3, state: 'trust_stale' } }),
    dev('back-1', { online: true, lastSeen: seen, rolledBackAt: '2026-11-30T11:00:00.000Z' }),
    dev('fail-1', { online: true, lastSeen: seen }),
    dev('quar-1', { online: true, lastSeen: seen }),
    dev('fail-old', { online: true, lastSeen: seen }),
  ]);
  const ro = { model: 'digits', releaseSeq: 2, target: { kind: 'all' as const }, canaryShare: 0.1, soakSeconds: 60, failureThreshold: 0.2 };
  await reg.q.insert(rollouts).values([
    { id: 'ro-live', ...ro, state: 'fleet' },
    { id: 'ro-aborted', ...ro, state: 'aborted' },
  ]);
  await reg.q.insert(rolloutDevices).values([
    { rolloutId: 'ro-live', deviceId: 'fail-1', canary: true, state: 'failed', reason: 'self_test_failed' },
    { rolloutId: 'ro-live', deviceId: 'quar-1', canary: true, state: 'quarantined' },
    { rolloutId: 'ro-live', deviceId: 'ok-1', canary: false, state: 'installed' },
    { rolloutId: 'ro-aborted', deviceId: 'fail-old', canary: true, state: 'failed' },
  ]);
}

/** The fleet summary of that fleet at ATTENTION_FLEET_NOW, worked out by hand from the rows above. */
export const ATTENTION_FLEET_SUMMARY = {
  total: 12,
  online: 10,
  offline: 1,
  neverSeen: 1,
  revoked: 1,
  attention: 6,
  attentionBy: { rollout_failed: 1, quarantined: 1, rolled_back: 1, unhealthy: 1, outbox_dropping: 1, trust_stale: 1 },
  releases: [
    { model: 'digits', release: 1, devices: 4 },
    { model: 'digits', release: 2, devices: 2 },
  ],
  agents: [
    { agent: 'apprentice-edge/0.2.0', platform: 'linux-x64', devices: 2 },
    { agent: 'apprentice-edge/0.1.0', platform: 'linux-x64', devices: 1 },
  ],
  at: ATTENTION_FLEET_NOW.toISOString(),
};
