/**
 * Agent updates end to end on one simulated device (issue 14, item 4): the real unit file's
 * ExecStartPre/ExecStart and restart policy run by a fake systemd (test/helpers/fake-systemd.ts), the
 * real launcher script, real gzipped tarballs served over HTTP, and a fake agent bundle whose program
 * (test/fixtures/fake-agent.ts) runs the real edge/agent install, trial, commit and report code.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSigningKey, toTrustedKey } from '../../../shared/manifest/index.js';
import { Outbox } from '../../../edge/outbox/index.js';
import { readMarker, SWITCH_STEPS } from '../../../edge/agent/index.js';
import { makeAgentRelease, thisPlatform, type BundleFile } from '../../fixtures/agent-release.js';
import { startArtifactServer, type ArtifactServer } from '../../helpers/artifact-server.js';
import { AGENT_UNIT as UNIT, fakeAgentFiles, fakeAgentPrefix } from '../../helpers/fake-agent-device.js';
import { readUnitPolicy, runService, type ServiceRun } from '../../helpers/fake-systemd.js';
import { makeExample } from '../../unit/outbox/helpers.js';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const FAKE_MAIN = join(REPO, 'test/fixtures/fake-agent.ts');
/** The fake agent program bundled into one file (beside node_modules, so its packages resolve). */
const FAKE_BUILT = join(REPO, 'node_modules/.cache/apprentice-test', `fake-agent-${process.pid}.mjs`);
const key = generateSigningKey();
const OUTBOX_ROWS = 7;

/** The HTTP source of the releases. */
let server: ArtifactServer;

beforeAll(async () => {
  await build({ entryPoints: [FAKE_MAIN], bundle: true, platform: 'node', format: 'esm', target: 'node20', packages: 'external', outfile: FAKE_BUILT, logLevel: 'error' });
  server = await startArtifactServer();
});
afterAll(async () => {
  rmSync(FAKE_BUILT, { force: true });
  await server?.close();
});

// Removed at the end, not after each test: the kill-step tests run concurrently.
const roots: string[] = [];
afterAll(() => {
  for (const r of roots.splice(0)) rmSync(r, { recursive: true, force: true });
});

const bundle = (version: string, behavior: string): BundleFile[] => fakeAgentFiles(version, behavior, { path: 'dist/edge/filler.js', data: '// filler so the tarball spans several chunks\n'.repeat(400) });

function sha(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

interface Device {
  prefix: string;
  app: string;
  data: string;
  agent: string;
  env: NodeJS.ProcessEnv;
  run: () => Promise<ServiceRun>;
  events: () => Array<{ type: string; agent?: { version: string; reason?: string; running: string } }>;
  starts: () => Array<{ version: string; outboxRows: number }>;
  modelSha: string;
}

/**
 * A device installed as install-edge.sh leaves it: version 1.0.0 in <prefix>/opt/apprentice with the
 * launcher, no agent dir yet, an outbox with OUTBOX_ROWS examples and a model slot file in the data dir.
 */
async function device(opts: { behavior?: string; tamper?: boolean; platform?: string; killAt?: string } = {}): Promise<Device> {
  const { prefix, app, data, map } = fakeAgentPrefix(bundle('1.0.0', 'good'));
  roots.push(prefix);
  mkdirSync(join(data, 'slots'), { recursive: true });
  writeFileSync(join(data, 'slots/model.onnx'), Buffer.alloc(50_000, 7));
  const ob = await Outbox.create({ path: join(data, 'outbox.db'), maxRows: 1000, maxBytes: 1 << 24, maxExampleBytes: 64 * 1024 });
  for (let i = 0; i < OUTBOX_ROWS; i++) ob.add(makeExample('audit'));
  ob.dispose();

  const url = `/agent-${roots.length}-${Date.now()}.tgz`;
  const rel = makeAgentRelease(key, { version: '2.0.0', agentSeq: 5, files: bundle('2.0.0', opts.behavior ?? 'good'), url: server.url(url), platform: opts.platform ?? thisPlatform(), chunkSize: 4096 });
  const body = Buffer.from(rel.tarball);
  if (opts.tamper) body[Math.floor(body.length / 2)]! ^= 0xff;
  server.serve(url, body);
  writeFileSync(join(prefix, 'agent-manifest.json'), JSON.stringify(rel.signed));

  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    NODE_ENV: 'test',
    FAKE_AGENT_MAIN: FAKE_BUILT,
    FAKE_AGENT_DATA: data,
    FAKE_AGENT_KEY: JSON.stringify(toTrustedKey(key)),
    FAKE_AGENT_INSTALL: join(prefix, 'agent-manifest.json'),
    FAKE_AGENT_DEADLINE_MS: '1000',
    ...(opts.killAt ? { APPRENTICE_TEST_AGENT_KILL_AT: opts.killAt } : {}),
  };
  const policy = readUnitPolicy(UNIT);
  const lines = (file: string) => (existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : []);
  return {
    prefix,
    app,
    data,
    agent: join(data, 'agent'),
    env,
    run: () => runService({ policy, map, env, cwd: app, restartSecMs: 10, maxStarts: 8 }),
    events: () => lines(join(data, 'events.jsonl')),
    starts: () => lines(join(data, 'starts.jsonl')),
    modelSha: sha(join(data, 'slots/model.onnx')),
  };
}

/** The data the update must never touch: outbox rows (counted through the real Outbox) and the model file. */
async function expectDataIntact(d: Device): Promise<void> {
  const ob = await Outbox.create({ path: join(d.data, 'outbox.db'), maxRows: 1000, maxBytes: 1 << 24, maxExampleBytes: 64 * 1024 });
  expect(ob.depth()).toBe(OUTBOX_ROWS);
  ob.dispose();
  expect(sha(join(d.data, 'slots/model.onnx'))).toBe(d.modelSha);
  for (const s of d.starts()) expect(s.outboxRows, `outbox as seen by ${s.version}`).toBe(OUTBOX_ROWS);
}

/** The version `current` names is complete: its entry point and package.json are there. */
function currentVersion(d: Device): string {
  const target = existsSync(join(d.agent, 'current')) ? readlinkSync(join(d.agent, 'current')) : d.app;
  const dir = target.startsWith('/') ? target : join(d.agent, target);
  expect(existsSync(join(dir, 'bin/apprentice-edge.js'))).toBe(true);
  return (JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version: string }).version;
}

// Generous timeouts: each start is a real node process, slow on a loaded 2-core machine.
describe('agent update on a device (launcher + fake systemd)', { timeout: 120_000 }, () => {
  it('an upgrade that commits: 1.0.0 switches, exits 75, 2.0.0 passes its health commit', async () => {
    const d = await device();
    const r = await d.run();
    expect(r.result, r.output).toBe('exited');
    expect(r.exits).toEqual([75, 0]);
    expect(currentVersion(d)).toBe('2.0.0');
    expect(readlinkSync(join(d.agent, 'current'))).toBe('2.0.0');
    expect(await readMarker(d.agent)).toMatchObject({ state: 'committed', pending: '2.0.0', previous: d.app, attempts: 1, reported: true });
    expect(d.events().map((e) => [e.type, e.agent?.version, e.agent?.running])).toEqual([
      ['agent_installed', '2.0.0', '1.0.0'],
      ['agent_committed', '2.0.0', '2.0.0'],
    ]);
    expect(d.starts().map((s) => s.version)).toEqual(['1.0.0', '2.0.0']);
    // Two versions at most: 2.0.0 here, 1.0.0 (the installer's bundle) is the rollback target.
    expect(readdirSync(d.agent).filter((n) => !n.startsWith('.')).sort()).toEqual(['2.0.0', 'agent-state.json', 'current', 'downloads', 'marker']);
    await expectDataIntact(d);
  });

  it('a new version that exits at start is rolled back by the launcher, and 1.0.0 reports start_failed', async () => {
    const d = await device({ behavior: 'crash' });
    const r = await d.run();
    expect(r.result, r.output).toBe('exited');
    // 1.0.0 switches (75); 2.0.0 crashes twice (maxAttempts 2); the launcher rolls back; 1.0.0 reports.
    expect(r.exits).toEqual([75, 1, 1, 0]);
    const policy = readUnitPolicy(UNIT);
    expect(r.starts).toBeLessThanOrEqual(policy.startLimitBurst);
    expect(r.output).toMatch(/not committed after 2 start\(s\) \(start_failed\): rolling back/);
    expect(currentVersion(d)).toBe('1.0.0');
    const ev = d.events().filter((e) => e.type === 'agent_rolled_back');
    expect(ev).toHaveLength(1);
    expect(ev[0]!.agent).toMatchObject({ version: '2.0.0', running: '1.0.0', reason: 'start_failed' });
    expect(await readMarker(d.agent)).toMatchObject({ state: 'rolled_back', reason: 'start_failed', reported: true });
    // The failed version is deleted; its retained manifest (seq 5, now the floor) is not installed again.
    expect(existsSync(join(d.agent, '2.0.0'))).toBe(false);
    const again = await d.run();
    expect(again.exits).toEqual([0]);
    expect(d.events().filter((e) => e.type !== 'agent_installed' && e.type !== 'agent_rolled_back')).toEqual([]);
    await expectDataIntact(d);
  });

  it('a new version that never becomes healthy is rolled back after the deadline (health_timeout)', async () => {
    const d = await device({ behavior: 'silent' });
    const r = await d.run();
    expect(r.result, r.output).toBe('exited');
    expect(r.exits).toEqual([75, 75, 0]);
    expect(currentVersion(d)).toBe('1.0.0');
    const ev = d.events().find((e) => e.type === 'agent_rolled_back');
    expect(ev?.agent).toMatchObject({ version: '2.0.0', running: '1.0.0', reason: 'health_timeout' });
    await expectDataIntact(d);
  });

  it('a tampered tarball is refused before anything is unpacked', async () => {
    const d = await device({ tamper: true });
    const r = await d.run();
    expect(r.exits).toEqual([0]);
    expect(d.events().map((e) => [e.type, e.agent?.reason])).toEqual([['agent_rejected', 'hash_mismatch']]);
    const left = readdirSync(d.agent);
    expect(left.filter((n) => n.startsWith('2.0.0'))).toEqual([]);
    expect(left).not.toContain('current');
    expect(currentVersion(d)).toBe('1.0.0');
  });

  it('a release for another platform is refused without a download', async () => {
    const before = server.requests();
    const d = await device({ platform: thisPlatform() === 'linux-arm64' ? 'linux-x64' : 'linux-arm64' });
    const r = await d.run();
    expect(r.exits).toEqual([0]);
    expect(d.events().map((e) => [e.type, e.agent?.reason])).toEqual([['agent_rejected', 'wrong_platform']]);
    expect(server.requests()).toBe(before);
    expect(existsSync(join(d.agent, 'downloads'))).toBe(false);
  });

  // Concurrent: each device has its own root; the wall time is mostly node start-up on a loaded machine.
  describe.concurrent.each(SWITCH_STEPS)('kill -9 at %s', (step) => {
    it('the device comes back on a complete version and ends committed on 2.0.0', { timeout: 180_000 }, async () => {
      const d = await device({ killAt: step });
      const r = await d.run();
      expect(r.result, r.output).toBe('exited');
      expect(r.exits).toContain('SIGKILL');
      expect(r.starts).toBeLessThanOrEqual(readUnitPolicy(UNIT).startLimitBurst);
      // Every start ran a complete version (each start logged its version from its own package.json).
      expect(d.starts().every((s) => s.version === '1.0.0' || s.version === '2.0.0')).toBe(true);
      expect(currentVersion(d)).toBe('2.0.0');
      expect(await readMarker(d.agent)).toMatchObject({ state: 'committed', pending: '2.0.0', reported: true });
      expect(d.events().filter((e) => e.type === 'agent_committed')).toHaveLength(1);
      await expectDataIntact(d);
    });
  });
});
