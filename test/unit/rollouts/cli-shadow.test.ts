import { join } from 'node:path';
import { Command } from 'commander';
import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createCloudApi } from '../../../cloud/api/app.js';
import { KeyStore } from '../../../cloud/keys/store.js';
import { devices } from '../../../cloud/registry/schema.js';
import { rolloutCommand } from '../../../cloud/rollouts/cli.js';
import { reissueRelease, signShadowManifest } from '../../../cloud/rounds/index.js';
import { ShadowRollouts } from '../../../cloud/shadow/index.js';
import { ReleasePublisher } from '../../../cloud/fleet/publisher.js';
import { deviceCompatOf } from '../../../cloud/fleet/device-compat.js';
import { signManifest } from '../../../shared/manifest/index.js';
import { DEVICE_CAPABILITIES, type Manifest } from '../../../shared/protocol/index.js';
import { FakeRounds, TOKEN } from '../cloud-api/helpers.js';
import { MODEL } from '../fleet/fixtures.js';
import { RolloutHarness, ids } from './harness.js';
import { captureProgram, type CapturedRun } from '../../helpers/capture-program.js';

/** `apprentice rollout start --shadow`, `status`, `switch` and `abort` of shadow runs, through the real API, engine and shadow service. */
describe('apprentice rollout: shadow runs', () => {
  let h: RolloutHarness;
  let shadow: ShadowRollouts;
  let fetchImpl: typeof fetch;

  beforeEach(async () => {
    h = new RolloutHarness();
    h.addRelease(1);
    h.addRelease(2, 1);
    for (const id of ids(2)) h.fx.addDevice(id, { runningSeq: 1, desiredSeq: 1 });
    h.fx.db.update(devices).set({ protocolVersion: 2, capabilities: [DEVICE_CAPABILITIES.shadow], lastSeen: new Date().toISOString() }).run();
    await h.boot({ tickSeconds: 60 });
    const signer = { sign: (m: Manifest) => signManifest(m, h.fx.key) };
    const publisher = new ReleasePublisher({ mqtt: h.fake, dataDir: h.fx.dir, compatOf: (id) => deviceCompatOf(h.fx.registry, id) });
    shadow = new ShadowRollouts({ registry: h.fx.registry, publisher, rollouts: h.engine, signShadow: (seq, until) => signShadowManifest(h.fx.registry, signer, seq, until), reissue: async (seq) => reissueRelease(h.fx.registry, signer, seq) });
    const app = createCloudApi({ registry: h.fx.registry, keys: KeyStore.open({ dir: join(h.fx.dir, 'keys') }), adminToken: TOKEN, broker: { publicUrl: 'mqtt://x' }, rounds: new FakeRounds(h.fx.registry), rollouts: h.engine, shadow, artifactsDir: h.fx.dir });
    fetchImpl = ((input: string | URL | Request, init?: RequestInit) => app.request(String(input), init)) as typeof fetch;
  });
  afterEach(async () => {
    await shadow.stop();
    await h.dispose();
  });

  const run = (...argv: string[]): Promise<CapturedRun> => captureProgram(new Command('apprentice').addCommand(rolloutCommand({ fetchImpl })), ['rollout', ...argv, '--cloud', 'http://cloud.test', '--token', TOKEN]);

  it('start --shadow, status, switch: the run, its devices and the rollout the switch started', async () => {
    const started = await run('start', '--model', MODEL, '--release', '2', '--waves', '1', '--shadow', '30', '--shadow-min-agreement', '0.9', '--shadow-min-requests', '10');
    expect(started.code, started.stderr).toBe(0);
    const id = /shadow (shadow-[0-9a-f]+):/.exec(started.stdout)?.[1];
    expect(id, started.stdout).toBeDefined();
    expect(started.stdout).toMatch(/release 2 \(shadow manifest \d+\), shadowing/);
    const status = await run('status', id!);
    expect(status.stdout).toMatch(/d01: sent, 0 shadowed, agreement —/);
    expect(status.stdout).toMatch(/gate: not passed \(no evidence/);
    const sw = await run('switch', id!, '--reason', 'checked', '--json');
    expect(sw.code, sw.stderr).toBe(0);
    const body = JSON.parse(sw.stdout) as { state: string; switchedRelease: number; rolloutId: string };
    expect(body).toMatchObject({ state: 'switched' });
    const ro = await run('status', body.rolloutId, '--json');
    expect(JSON.parse(ro.stdout)).toMatchObject({ release: body.switchedRelease, state: 'fleet' });
    expect((await run('switch', id!)).code).toBe(2); // HTTP 409: already switched
  });

  it('refuses bad input with exit 2 and a message; abort ends a run', async () => {
    for (const argv of [
      ['start', '--model', MODEL, '--release', '2', '--shadow', '0'],
      ['start', '--model', MODEL, '--release', '2', '--shadow', 'soon'],
      ['start', '--model', MODEL, '--release', '2', '--shadow-min-agreement', '0.9'],
      ['start', '--model', MODEL, '--release', '2', '--shadow', '5', '--shadow-min-agreement', '1.5'],
      ['start', '--model', MODEL, '--release', '2', '--shadow', '5', '--wait'],
      ['switch', 'ro-123'],
    ]) {
      const r = await run(...argv);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.stderr.length, argv.join(' ')).toBeGreaterThan(0);
    }
    const started = await run('start', '--model', MODEL, '--release', '2', '--shadow', '5', '--no-auto-switch', '--json');
    const run1 = JSON.parse(started.stdout) as { id: string; autoSwitch: boolean };
    expect(run1.autoSwitch).toBe(false);
    const aborted = await run('abort', run1.id, '--reason', 'wrong candidate');
    expect(aborted.stdout).toMatch(/aborted — wrong candidate/);
    const help = await run('switch', '--help');
    expect(help.stdout).toMatch(/Switch a shadow run now/);
  });
});
