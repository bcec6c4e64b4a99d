import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Command } from 'commander';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createCloudApi } from '../../../cloud/api/app.js';
import { KeyStore } from '../../../cloud/keys/store.js';
import { rolloutCommand } from '../../../cloud/rollouts/cli.js';
import { FakeRounds, TOKEN } from '../cloud-api/helpers.js';
import { MODEL } from '../fleet/fixtures.js';
import { RolloutHarness, ids } from './harness.js';
import { captureProgram, type CapturedRun } from '../../helpers/capture-program.js';

/** `apprentice rollout ...` in-process, through the real API app and the real engine (real time: the CLI polls). */
describe('apprentice rollout', () => {
  let h: RolloutHarness;
  let fetchImpl: typeof fetch;
  let progress: string;
  const stream = new Writable({ write: (chunk, _enc, cb) => ((progress += String(chunk)), cb()) });

  beforeEach(async () => {
    h = new RolloutHarness();
    h.addRelease(1);
    h.addRelease(2, 1);
    for (const id of ids(4)) h.fx.addDevice(id, { runningSeq: 1, desiredSeq: 1 });
    await h.boot({ tickSeconds: 0.05 });
    const app = createCloudApi({ registry: h.fx.registry, keys: KeyStore.open({ dir: join(h.fx.dir, 'keys') }), adminToken: TOKEN, broker: { publicUrl: 'mqtt://x' }, rounds: new FakeRounds(h.fx.registry), rollouts: h.engine, artifactsDir: h.fx.dir });
    fetchImpl = ((input: string | URL | Request, init?: RequestInit) => app.request(String(input), init)) as typeof fetch;
    progress = '';
  });
  afterEach(() => h.dispose());

  const run = (...argv: string[]): Promise<CapturedRun> => captureProgram(new Command('apprentice').addCommand(rolloutCommand({ fetchImpl, stream })), ['rollout', ...argv, '--cloud', 'http://cloud.test', '--token', TOKEN]);

  it('create, status, pause, resume and abort a rollout', async () => {
    expect((await run('create', '--model', MODEL, '--release', '2', '--agreement-margin', '1.5')).code).toBe(2);
    const created = await run('create', '--model', MODEL, '--release', '2', '--waves', '0.5,1', '--soak', '600', '--agreement-margin', '0.02', '--json');
    expect(created.code, created.stderr).toBe(0);
    const r = JSON.parse(created.stdout) as { id: string; state: string; waves: number[] };
    expect(r).toMatchObject({ state: 'canary', waves: [0.5, 1], agreementMargin: 0.02 });
    const status = await run('status', r.id);
    expect(status.stdout).toMatch(new RegExp(`^rollout ${r.id}: model ${MODEL} release 2, canary \\(wave 1/2\\)\\n  devices: 2 waiting, 2 desired`));
    const paused = await run('pause', r.id, '--reason', 'dashboards');
    expect(paused.stdout).toMatch(/\n {2}paused: dashboards\n$/);
    expect((await run('pause', r.id)).code).toBe(2); // already paused: HTTP 409
    expect((await run('resume', r.id)).code).toBe(0);
    const aborted = await run('abort', r.id, '--reason', 'wrong release', '--json');
    expect(JSON.parse(aborted.stdout)).toMatchObject({ state: 'aborted', reason: 'wrong release', paused: false });
    expect((await h.view(r.id)).rollout.state).toBe('aborted'); // the engine's own record
  });

  it('--wait follows the waves with progress bars until the rollout completes (exit 0) or rolls back (exit 1)', async () => {
    const waiting = run('create', '--model', MODEL, '--release', '2', '--waves', '0.25,1', '--soak', '1', '--wait', '--interval', '20');
    await vi.waitFor(async () => expect((await h.engine.list())[0]?.state).toBe('canary'));
    const id = (await h.engine.list())[0]!.id;
    for (const d of (await h.wave(id, 0))) await h.install(d, 2);
    await vi.waitFor(async () => expect((await h.view(id)).rollout.wave).toBe(1), { timeout: 5000 });
    for (const d of (await h.wave(id, 1))) await h.install(d, 2);
    const done = await waiting;
    expect(done.code, done.stderr).toBe(0);
    expect(done.stdout).toMatch(/completed/);
    expect(progress).toMatch(/wave 1 \(25%\) \[.*\] 1\/1 settled \| 1 installed/);
    expect(progress).toMatch(/wave 2 \(100%\) \[.*\] 3\/3 settled \| 3 installed/);

    h.addRelease(3, 2);
    const failing = run('create', '--model', MODEL, '--release', '3', '--waves', '1', '--min-failures', '1', '--wait', '--interval', '20');
    await vi.waitFor(async () => expect((await h.engine.list())[0]?.releaseSeq).toBe(3));
    await h.event('d01', 'rejected', 3, 'load_failed');
    const rolled = await failing;
    expect(rolled.code).toBe(1);
    expect(rolled.stderr).toMatch(/^rollout \S+ ended rolled_back: 1 failed of 1 settled/);
    expect((await h.engine.list())[0]).toMatchObject({ state: 'rolled_back', rollbackSeq: 4 });
  });

  it('refuses bad arguments with exit 2 and one line, before any request', async () => {
    for (const [args, message] of [
      [['create', '--model', MODEL, '--release', '2', '--waves', '0.1,1', '--canary-share', '0.1'], /either --waves or --canary-share/],
      [['create', '--model', MODEL, '--release', '2', '--waves', '0.1,x'], /--waves: expected a number/],
      [['create', '--model', MODEL, '--release', '2', '--target', 'devices:bad/id'], /--target: invalid device id/],
      [['create', '--model', MODEL, '--release', '2', '--target', 'some'], /--target: expected all, group:NAME/],
      [['create', '--model', MODEL, '--release', '2', '--waves', '0.5,0.2,1'], /HTTP 400 .*waves must increase/],
      [['status', 'nope'], /HTTP 404 .*rollout_not_found/],
    ] as const) {
      const r = await run(...args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
    expect((await h.engine.list())).toEqual([]);
  });
});
