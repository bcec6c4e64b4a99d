/**
 * deploy/apprentice-launcher.sh on its own (issue 14): the marker check (counting, rollback on attempts
 * and on the deadline, malformed markers), and `run` following `current` with its fallback. The full
 * update cycle through a fake systemd is test/integration/agent/agent-update.test.ts.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { formatMarker, parseMarker, type Marker } from '../../../edge/agent/index.js';

const LAUNCHER = fileURLToPath(new URL('../../../deploy/apprentice-launcher.sh', import.meta.url));
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function setup(): { data: string; agent: string; app: string } {
  const root = mkdtempSync(join(tmpdir(), 'apprentice-launcher-'));
  dirs.push(root);
  const data = join(root, 'data');
  const app = join(root, 'app');
  for (const [dir, v] of [[app, '1.0.0'], [join(data, 'agent/2.0.0'), '2.0.0']] as const) {
    mkdirSync(join(dir, 'bin'), { recursive: true });
    writeFileSync(join(dir, 'bin/apprentice-edge.js'), `console.log(JSON.stringify({ v: '${v}', args: process.argv.slice(2), root: process.env.APPRENTICE_AGENT_ROOT, dir: process.env.APPRENTICE_AGENT_DIR }));\n`);
  }
  return { data, agent: join(data, 'agent'), app };
}

const launcher = (args: string[]) => spawnSync('sh', [LAUNCHER, ...args], { encoding: 'utf8' });
const base: Marker = { state: 'pending', pending: '2.0.0', previous: '/x/app', previousVersion: '1.0.0', agentSeq: 4, attempts: 0, maxAttempts: 2, deadline: 4_000_000_000, reported: false };

describe('apprentice-launcher.sh', () => {
  it('prints help and refuses an unknown mode with exit 2', () => {
    expect(launcher(['--help']).stdout).toMatch(/launcher.sh check/);
    const bad = launcher(['frobnicate']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/expected check or run/);
  });

  it('counts the starts of a pending version, then rolls back to the previous one (start_failed)', () => {
    const { data, agent, app } = setup();
    symlinkSync('2.0.0', join(agent, 'current'));
    writeFileSync(join(agent, 'marker'), formatMarker({ ...base, previous: app }));
    for (const expected of [1, 2]) {
      expect(launcher(['check', '--data-dir', data]).status).toBe(0);
      expect(parseMarker(readFileSync(join(agent, 'marker'), 'utf8'))).toMatchObject({ state: 'pending', attempts: expected });
      expect(readlinkSync(join(agent, 'current'))).toBe('2.0.0');
    }
    const r = launcher(['check', '--data-dir', data]);
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/rolling back/);
    expect(readlinkSync(join(agent, 'current'))).toBe(app);
    // The TypeScript reader parses what the launcher wrote.
    expect(parseMarker(readFileSync(join(agent, 'marker'), 'utf8'))).toMatchObject({ state: 'rolled_back', reason: 'start_failed', attempts: 2, reported: false, pending: '2.0.0' });
  });

  it('rolls back a pending version past its deadline (health_timeout)', () => {
    const { data, agent, app } = setup();
    symlinkSync('2.0.0', join(agent, 'current'));
    writeFileSync(join(agent, 'marker'), formatMarker({ ...base, previous: app, deadline: Math.floor(Date.now() / 1000) - 1 }));
    expect(launcher(['check', '--data-dir', data]).status).toBe(0);
    expect(parseMarker(readFileSync(join(agent, 'marker'), 'utf8'))).toMatchObject({ state: 'rolled_back', reason: 'health_timeout' });
    expect(readlinkSync(join(agent, 'current'))).toBe(app);
  });

  it('never fails a start on a malformed or foreign marker, and leaves it as it is', () => {
    const { data, agent } = setup();
    symlinkSync('2.0.0', join(agent, 'current'));
    for (const text of ['garbage', 'v=2\nstate=pending\n', formatMarker(base).replace('attempts=0', 'attempts=x'), formatMarker(base).replace('pending=2.0.0', 'pending=$(touch /tmp/pwned)'), 'v=1\nstate=pending\nnonsense=1\n']) {
      writeFileSync(join(agent, 'marker'), text);
      const r = launcher(['check', '--data-dir', data]);
      expect(r.status, text).toBe(0);
      expect(r.stderr, text).toMatch(/marker/);
      expect(readFileSync(join(agent, 'marker'), 'utf8')).toBe(text);
      expect(readlinkSync(join(agent, 'current'))).toBe('2.0.0');
    }
  });

  it('runs the version `current` names, and the installed bundle without a link or with a broken one', () => {
    const { data, agent, app } = setup();
    const run = () => JSON.parse(launcher(['run', '--data-dir', data, '--app-dir', app, '--node', process.execPath, '--', '--config', '/etc/x.json']).stdout) as { v: string; args: string[]; root: string; dir: string };
    expect(run()).toEqual({ v: '1.0.0', args: ['--config', '/etc/x.json'], root: agent, dir: app });
    symlinkSync('2.0.0', join(agent, 'current'));
    expect(run()).toMatchObject({ v: '2.0.0', dir: join(agent, '2.0.0') });
    rmSync(join(agent, 'current'));
    symlinkSync('9.9.9', join(agent, 'current'));
    expect(run()).toMatchObject({ v: '1.0.0', dir: app });
  });
});
