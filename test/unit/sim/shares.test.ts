import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { parseShare, pickedByShare, planDevice, simPlan } from '../../../edge/sim/shares.js';
import { simCommand } from '../../../edge/sim/cli.js';
import { captureProgram, type CapturedRun } from '../../helpers/capture-program.js';

describe('sim shares', () => {
  it('picks ⌊n·s⌋ devices spread evenly, the same in every run, and the two shares do not overlap', () => {
    const a = simPlan(1000, { neverConnect: 0.05, failSelfTest: 0.01 });
    expect(a.neverConnect).toHaveLength(50);
    expect(a.failSelfTest).toHaveLength(10);
    expect(a.neverConnect.filter((i) => a.failSelfTest.includes(i))).toEqual([]);
    expect(simPlan(1000, { neverConnect: 0.05, failSelfTest: 0.01 })).toEqual(a);
    // Evenly: one kept off in every 20 devices.
    for (let k = 0; k < 50; k++) expect(a.neverConnect.filter((i) => i >= k * 20 && i < (k + 1) * 20)).toHaveLength(1);
    expect(simPlan(6, { neverConnect: 1 / 6, failSelfTest: 1 / 6 })).toEqual({ neverConnect: [5], switchedOff: [], failSelfTest: [2], failAgentTrial: [] });
    expect(simPlan(8, { neverConnect: 1 / 8, switchedOff: 1 / 8, failSelfTest: 1 / 8 })).toEqual({ neverConnect: [7], switchedOff: [5], failSelfTest: [3], failAgentTrial: [] });
    // --agent-fail-rate: its own phase, so it overlaps the self-test share as little as possible.
    expect(simPlan(8, { failSelfTest: 1 / 8, failAgentTrial: 1 / 8 })).toEqual({ neverConnect: [], switchedOff: [], failSelfTest: [3], failAgentTrial: [1] });
    const b = simPlan(1000, { switchedOff: 0.05, failSelfTest: 0.01 });
    expect(b.switchedOff).toHaveLength(50);
    expect(b.failSelfTest).toHaveLength(10);
    expect(b.switchedOff.filter((i) => b.failSelfTest.includes(i))).toEqual([]);
    expect(simPlan(10, {})).toEqual({ neverConnect: [], switchedOff: [], failSelfTest: [], failAgentTrial: [] });
    expect([0, 1, 2].every((i) => pickedByShare(i, 1))).toBe(true);
    expect(planDevice(3, { neverConnect: 1, switchedOff: 1, failSelfTest: 1 })).toEqual({ neverConnect: true, switchedOff: false, failSelfTest: false, failAgentTrial: false });
    expect(planDevice(3, { switchedOff: 1, failSelfTest: 1 })).toEqual({ neverConnect: false, switchedOff: true, failSelfTest: false, failAgentTrial: false });
  });

  it('refuses a share outside [0, 1] or not a number', () => {
    for (const bad of ['', ' ', '-0.1', '1.5', 'abc', 'NaN', 'Infinity', '5%']) expect(() => parseShare('--fail-self-test', bad), bad).toThrow(/--fail-self-test: expected a share between 0 and 1/);
    expect(parseShare('--never-connect', '0.05')).toBe(0.05);
    expect(parseShare('--never-connect', '0')).toBe(0);
    expect(parseShare('--never-connect', '1')).toBe(1);
  });

  it('apprentice sim: a bad share or worker count exits 2 with one line; --help names the flags', async () => {
    const base = ['sim', '--devices', '2', '--mqtt-url', 'mqtt://127.0.0.1:1', '--trusted-keys', '/nonexistent.json'];
    const bad = await run([...base, '--fail-self-test', '1.5']);
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim()).toMatch(/^[^\n]*--fail-self-test: expected a share between 0 and 1, got "1\.5"$/);
    const off = await run([...base, '--never-connect', 'most']);
    expect(off.code).toBe(2);
    expect(off.stderr.trim()).toMatch(/^[^\n]*--never-connect: expected a share between 0 and 1, got "most"$/);
    const w = await run([...base, '--workers', '0']);
    expect(w.code).toBe(2);
    expect(w.stderr).toMatch(/--workers/);
    const help = await run(['sim', '--help']);
    expect(help.code).toBe(0);
    for (const flag of ['--workers <n>', '--fail-self-test <share>', '--never-connect <share>', '--switched-off <share>']) expect(help.stdout).toContain(flag);
  });
});

/** The CLI in-process (commander + runProgram, as bin/main.ts runs it). */
const run = (argv: string[]): Promise<CapturedRun> => captureProgram(new Command('apprentice').addCommand(simCommand()), argv);
