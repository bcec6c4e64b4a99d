/**
 * The real edge daemon under the launcher's agent layout (issue 14): with APPRENTICE_AGENT_ROOT set it
 * declares `agent-update`, runs the start-time trial on a pending version (broker, API, status) and
 * commits it, and follows `devices/{id}/agent`. The launcher and restarts are covered with real
 * processes in test/integration/agent/agent-update.test.ts.
 */
import { existsSync, mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EdgeDaemon } from '../../../edge/daemon.js';
import { readMarker, writeMarker, AGENT_STATE_FILE } from '../../../edge/agent/index.js';
import { readAgentVersion } from '../../../edge/status/agent-version.js';
import { generateSigningKey } from '../../../shared/manifest/index.js';
import { cloudInfo, cloudInfoSchema, DEVICE_CAPABILITIES, encodePayload, topics } from '../../../shared/protocol/index.js';
import { makeAgentRelease, thisPlatform } from '../../fixtures/agent-release.js';
import { brokerMatrix, waitFor } from '../../helpers/broker.js';
import { edgeConfig, edgeWorld } from './harness.js';

const w = edgeWorld(brokerMatrix()[0]!);
const key = generateSigningKey();
const version = readAgentVersion().version;

async function agentDevice() {
  const d = await w.device();
  await d.cloud.client.publishAsync(topics.cloudInfo(), encodePayload(cloudInfoSchema, cloudInfo(new Date())), { qos: 1, retain: true });
  d.retained.push(topics.cloudInfo());
  const root = join(d.dir, 'agent');
  mkdirSync(join(root, version), { recursive: true });
  symlinkSync(version, join(root, 'current'));
  const restarts: number[] = [];
  const config = edgeConfig({ deviceId: d.deviceId, mqttUrl: w.broker.url, dataDir: d.dir, key, agent: { healthDeadlineSeconds: 30 } });
  const start = async () => {
    const daemon = await EdgeDaemon.create(config, { env: { APPRENTICE_AGENT_ROOT: root, APPRENTICE_AGENT_DIR: join(root, version) }, onRestart: () => restarts.push(Date.now()) });
    w.cleanups.push(() => daemon.stop());
    await daemon.start();
    return daemon;
  };
  return { ...d, root, restarts, start };
}

describe('edge daemon with agent updates', { timeout: 60_000 }, () => {
  it('commits a pending version once connected, serving and reported, and declares agent-update', async () => {
    const d = await agentDevice();
    await writeMarker(d.root, { state: 'pending', pending: version, previous: '/opt/apprentice', previousVersion: '0.0.9', agentSeq: 3, attempts: 1, maxAttempts: 2, deadline: 4_000_000_000, reported: false });
    await d.start();
    const ev = await d.cloud.waitEvent((e) => e.type === 'agent_committed', 20_000);
    expect(ev.agent).toEqual({ version, agentSeq: 3, running: version });
    // The marker says `reported` right after the event is handed to the client.
    await waitFor(async () => (await readMarker(d.root))?.reported === true, 5_000, { message: 'marker reported' });
    expect(await readMarker(d.root)).toMatchObject({ state: 'committed', reported: true });
    expect(JSON.parse(readFileSync(join(d.root, AGENT_STATE_FILE), 'utf8'))).toEqual({ v: 1, highestAgentSeq: 3 });
    const status = await waitFor(() => d.cloud.statuses.find((s) => s.capabilities?.includes(DEVICE_CAPABILITIES.agentUpdate)), 10_000, { message: 'status with agent-update' });
    expect(status.agent).toBe(`apprentice-edge/${version}`);
    expect(d.restarts).toEqual([]);
    expect(d.cloud.invalid).toEqual([]);
  });

  it('refuses a retained agent release for another platform with agent_rejected', async () => {
    const d = await agentDevice();
    const rel = makeAgentRelease(key, { version: '9.9.9', agentSeq: 7, files: [{ path: 'bin/apprentice-edge.js', data: 'x' }], platform: thisPlatform() === 'linux-arm64' ? 'linux-x64' : 'linux-arm64' });
    await d.cloud.client.publishAsync(topics.agent(d.deviceId), JSON.stringify(rel.signed), { qos: 1, retain: true });
    d.retained.push(topics.agent(d.deviceId));
    await d.start();
    const ev = await d.cloud.waitEvent((e) => e.type === 'agent_rejected', 20_000);
    expect(ev.agent).toMatchObject({ version: '9.9.9', agentSeq: 7, running: version, reason: 'wrong_platform' });
    expect(d.restarts).toEqual([]);
  });

  it('refuses a release whose upgradeFrom does not list the running version, reporting not_upgradable', async () => {
    const d = await agentDevice();
    const rel = makeAgentRelease(key, { version: '9.9.9', agentSeq: 8, files: [{ path: 'bin/apprentice-edge.js', data: 'x' }], platform: thisPlatform(), upgradeFrom: ['0.0.1', '0.0.2'] });
    await d.cloud.client.publishAsync(topics.agent(d.deviceId), JSON.stringify(rel.signed), { qos: 1, retain: true });
    d.retained.push(topics.agent(d.deviceId));
    await d.start();
    const ev = await d.cloud.waitEvent((e) => e.type === 'agent_rejected', 20_000);
    expect(ev.agent).toMatchObject({ version: '9.9.9', agentSeq: 8, running: version, reason: 'not_upgradable' });
    expect(ev.detail).toMatch(/upgrades from 0\.0\.1, 0\.0\.2/);
    // Nothing was downloaded or unpacked for it.
    expect(existsSync(join(d.root, '9.9.9'))).toBe(false);
    expect(d.restarts).toEqual([]);
  });
});
