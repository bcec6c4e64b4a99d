import { Command } from 'commander';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { devicesCommand, fleetCommand, roundsCommand } from '../../../cloud/fleet/cli.js';
import { rounds } from '../../../cloud/registry/schema.js';
import { TOKEN, harness, seedDevice, seedModel, seedRelease, type Harness } from '../cloud-api/helpers.js';
import { captureProgram, type CapturedRun } from '../../helpers/capture-program.js';

/** `apprentice devices ls | fleet status | rounds ls` in-process, through the real API app and registry. */
describe('fleet CLI', () => {
  let h: Harness;
  let fetchImpl: typeof fetch;

  beforeEach(() => {
    h = harness();
    fetchImpl = ((input: string | URL | Request, init?: RequestInit) => h.app.request(String(input), init)) as typeof fetch;
    seedModel(h);
    seedRelease(h, { seq: 1, bytes: Buffer.from('one') });
    seedRelease(h, { seq: 2, bytes: Buffer.from('two') });
    const seen = new Date().toISOString();
    for (let i = 0; i < 5; i++) seedDevice(h, `pi-${i}`, { groups: [i < 2 ? 'kitchen' : 'hall'], online: i < 4, lastSeen: seen, runningSeq: i < 3 ? 2 : 1, health: 'ok' });
    seedDevice(h, 'pi-sick', { groups: ['hall'], online: true, lastSeen: seen, runningSeq: 1, health: 'degraded' });
    seedDevice(h, 'x'.repeat(64));
    h.registry.db.insert(rounds).values([
      { id: 'round-a', model: 'digits', state: 'released', trigger: 'manual', releaseSeq: 2, exampleCount: 120, metrics: { holdoutAccuracy: 0.91, teacherHoldoutAccuracy: 0.95, holdoutAgreement: 0.93, hardAgreement: 0.7, gate: { pass: true, reason: 'ok' } }, createdAt: '2026-11-30T10:00:00.000Z' },
      { id: 'round-b', model: 'digits', state: 'rejected', trigger: 'schedule', exampleCount: 80, metrics: { holdoutAccuracy: 0.5, gate: { pass: false, reason: 'holdout accuracy 0.5000 < parent' } }, createdAt: '2026-11-30T11:00:00.000Z' },
    ]).run();
  });
  afterEach(() => h.close());

  const run = (...argv: string[]): Promise<CapturedRun> =>
    captureProgram(new Command('apprentice').addCommand(devicesCommand({ fetchImpl })).addCommand(fleetCommand({ fetchImpl })).addCommand(roundsCommand({ fetchImpl })), [...argv, '--cloud', 'http://cloud.test', '--token', TOKEN]);

  it('devices ls prints a table filtered on the server, across pages, and --json', async () => {
    const all = await run('devices', 'ls', '--limit', '3');
    expect(all.code, all.stderr).toBe(0);
    const lines = all.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^DEVICE\s+STATUS\s+RUNNING\s+DESIRED\s+HEALTH\s+LAST SEEN\s+GROUPS\s+ATTENTION$/);
    expect(lines.slice(1, 4).map((l) => l.split(/\s+/)[0])).toEqual(['pi-0', 'pi-1', 'pi-2']);
    expect(lines[4]).toBe('(3 of 7; raise --limit for more)');

    const sick = await run('devices', 'ls', '--state', 'attention');
    expect(sick.stdout).toMatch(/\npi-sick\s+online\s+digits@1\s+-\s+degraded\s+\S+\s+hall\s+unhealthy\n$/);
    const kitchen = JSON.parse((await run('devices', 'ls', '--group', 'kitchen', '--json')).stdout);
    expect(kitchen.devices.map((d: { id: string }) => d.id)).toEqual(['pi-0', 'pi-1']);
    expect(kitchen.total).toBe(2);
    const r1 = JSON.parse((await run('devices', 'ls', '--release', '1', '--json')).stdout);
    expect(r1.devices.map((d: { id: string }) => d.id)).toEqual(['pi-3', 'pi-4', 'pi-sick']);
    // A 64-character id keeps the table aligned (each row as wide as its header).
    const wide = await run('devices', 'ls', '--state', 'never_seen');
    expect(wide.stdout.split('\n')[1]!.startsWith('x'.repeat(64) + '  never_seen')).toBe(true);
  });

  it('every command has --help', async () => {
    for (const argv of [['devices', 'ls'], ['fleet', 'status'], ['rounds', 'ls']]) {
      const r = await run(...argv, '--help');
      expect(r.code, argv.join(' ')).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`Usage: apprentice ${argv.join(' ')} \\[options\\][\\s\\S]*--json[\\s\\S]*Example:`));
    }
  });

  it('devices ls refuses bad flags with exit 2 and one line', async () => {
    for (const argv of [['--state', 'sleepy'], ['--release', 'x'], ['--limit', '0'], ['--group', ' bad']]) {
      const r = await run('devices', 'ls', ...argv);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
  });

  it('fleet status prints the tiles and devices per release; --json the summary', async () => {
    const r = await run('fleet', 'status');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^DEVICES\s+ONLINE\s+OFFLINE\s+NEVER SEEN\s+ATTENTION\s+REVOKED\n7\s+5\s+1\s+1\s+1\s+0\n/);
    expect(r.stdout).toMatch(/attention: 1 unhealthy\n/);
    // Most devices first; a tie goes to the newer release.
    expect(r.stdout).toMatch(/MODEL\s+RELEASE\s+DEVICES\ndigits\s+2\s+3\ndigits\s+1\s+3\n$/);
    const s = JSON.parse((await run('fleet', 'status', '--json')).stdout);
    expect(s).toMatchObject({ total: 7, online: 5, attention: 1, releases: [{ model: 'digits', release: 2, devices: 3 }, { model: 'digits', release: 1, devices: 3 }] });
  });

  it('rounds ls prints rounds newest first with accuracies and the gate note', async () => {
    const r = await run('rounds', 'ls');
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^ROUND\s+MODEL\s+STATE\s+RELEASE\s+STUDENT\s+TEACHER\s+AGREEMENT\s+HARD AGR\s+EXAMPLES\s+CREATED\s+NOTE$/);
    expect(lines[1]).toMatch(/^round-b\s+digits\s+rejected\s+-\s+50\.0%\s+-\s+-\s+-\s+80\s+\S+\s+holdout accuracy 0\.5000 < parent$/);
    expect(lines[2]).toMatch(/^round-a\s+digits\s+released\s+2\s+91\.0%\s+95\.0%\s+93\.0%\s+70\.0%\s+120\s+\S+$/);
    const j = JSON.parse((await run('rounds', 'ls', '--model', 'digits', '--limit', '1', '--json')).stdout);
    expect(j.rounds.map((x: { id: string }) => x.id)).toEqual(['round-b']);
    const missing = await run('rounds', 'ls', '--model', 'nope');
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/HTTP 404/);
  });
});
