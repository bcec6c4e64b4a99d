/**
 * Crash-loop guard (issue 10, item 7) with the daemon as systemd runs it: a child process that a release
 * kills while loading (the test crash point SIGKILLs the process inside the model load, as the OOM killer
 * would), restarted as systemd would restart it.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { generateSigningKey } from '../../../shared/manifest/index.js';
import { cloudInfo, encodePayload, cloudInfoSchema, topics } from '../../../shared/protocol/index.js';
import { makeRelease, publishRelease } from '../../fixtures/edge-release.js';
import { sampleInputs } from '../../fixtures/onnx-models.js';
import { brokerMatrix } from '../../helpers/broker.js';
import { edgeWorld, DaemonProcess, edgeConfigInput, predict, writeConfig } from './harness.js';

const key = generateSigningKey();
const broker$ = brokerMatrix().at(-1)!; // Mosquitto when present

describe(`crash-loop guard over ${broker$.name}`, () => {
  const w = edgeWorld(broker$);
  const cleanups = w.cleanups;

  it('a release that kills the daemon while loading is deny-listed after 2 crashed starts; the previous one is served', async () => {
    const { deviceId, dir, cloud, retained } = await w.device();
    const dataDir = join(dir, 'data');
    const configPath = await writeConfig(dir, edgeConfigInput({ deviceId, mqttUrl: w.broker.url, dataDir, key, runtime: { healthWindowSeconds: 0.3 } }));
    const launch = async (env: Record<string, string>) => {
      const p = DaemonProcess.spawn(configPath, { NODE_ENV: 'test', ...env });
      cleanups.push(() => p.kill('SIGKILL'));
      await p.started();
      return p;
    };
    // A current cloud: its retained info says it reads `crash_loop` (an older one gets `inference_errors`, test/unit/trust/event-gate.test.ts).
    await cloud.client.publishAsync(topics.cloudInfo(), encodePayload(cloudInfoSchema, cloudInfo(new Date())), { qos: 1, retain: true });
    retained.push(topics.cloudInfo());
    const crashAt2 = { APPRENTICE_TEST_CRASH_AT: 'activate:2' };
    const r1 = makeRelease(key, { release: 1, seed: 81 });
    const r2 = makeRelease(key, { release: 2, seed: 82 });

    let daemon = await launch(crashAt2);
    retained.push(...(await publishRelease(cloud.client, deviceId, r1)));
    await cloud.waitEvent((e) => e.type === 'committed' && e.release === 1, 20_000, 'release 1 committed');
    retained.push(...(await publishRelease(cloud.client, deviceId, r2)));
    expect((await daemon.exited).signal).toBe('SIGKILL'); // crash 1, inside the load of release 2

    // systemd restarts it: release 2 is on trial once more, the retained desired brings it back, crash 2.
    daemon = await launch(crashAt2);
    expect((await daemon.exited).signal).toBe('SIGKILL');
    const onDisk = JSON.parse(await readFile(join(dataDir, 'update-state.json'), 'utf8')) as { trial: { crashes: number } | null; denied: string[] };
    expect(onDisk.trial?.crashes).toBe(1);
    expect(onDisk.denied).not.toContain(r2.manifest.artifact.sha256);

    // Third start (the crash point still armed): release 2 is deny-listed, release 1 served, the cloud told why.
    daemon = await launch(crashAt2);
    const rolled = await cloud.waitEvent((e) => e.type === 'rolled_back' && e.release === 2, 20_000, 'rolled_back crash_loop');
    expect(rolled).toMatchObject({ reason: 'crash_loop', sha256: r2.manifest.artifact.sha256, model: 'mnist-student' });
    expect(rolled.detail).toMatch(/uncommitted at 2 starts/);
    await cloud.waitEvent((e) => e.type === 'rejected' && e.release === 2 && e.reason === 'denied_hash', 20_000, 'retained desired refused');
    const r = await predict(daemon.apiUrl!, Array.from(sampleInputs(1, 784, 4)));
    expect(r.status).toBe(200);
    expect(r.body.release).toBe(1);
    expect(daemon.child.exitCode).toBeNull();
    const after = JSON.parse(await readFile(join(dataDir, 'update-state.json'), 'utf8')) as { trial: unknown; denied: string[] };
    expect(after.denied).toContain(r2.manifest.artifact.sha256);
    expect(after.trial).toBeNull();
  }, 90_000);
});
