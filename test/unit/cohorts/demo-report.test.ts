/**
 * Issue 13 item 5: the `--cohorts` demo's bookkeeping. Each device waits for its own cohort's release of
 * the round (or keeps what it served when its cohort's student was refused), and the summary measures
 * the cohort student against the round-0 gap of the shared student and against the shared student now.
 */
import { describe, expect, it } from 'vitest';
import { linesOf, type RoundView } from '../../../cloud/demo/cloud-client.js';
import type { DeviceInfo, DeviceRound, RoundRow } from '../../../cloud/demo/options.js';
import { gapsOf, summaryLines } from '../../../cloud/demo/report.js';

const dev = (id: string, shift: 'rotation' | 'thickness' | 'noise'): DeviceInfo => ({ id, shift, shiftDescription: shift, apiUrl: '', configFile: '', logFile: '' });
const devices = [dev('d1', 'rotation'), dev('d2', 'noise')];
const round = (metrics: RoundView['metrics'], releaseSeq = 10): RoundView => ({ id: 'r', state: 'released', releaseSeq, exampleCount: 0, error: null, startedAt: null, finishedAt: null, createdAt: '', progress: null, metrics });

describe('linesOf', () => {
  it("each device gets its cohort's release; a refused cohort keeps what it served, else the base", () => {
    const r = round({ cohorts: [{ cohort: 'rotation', state: 'released', releaseSeq: 11 }, { cohort: 'noise', state: 'rejected' }] });
    expect(linesOf(r, devices, true, new Map())).toEqual([11, 10]);
    expect(linesOf(r, devices, true, new Map([['d2', 7]]))).toEqual([11, 7]);
    expect(linesOf(r, devices, false, new Map())).toEqual([10, 10]);
    expect(linesOf(round(null), devices, true, new Map())).toEqual([10, 10]);
  });
});

describe('gapsOf in cohorts mode', () => {
  const cell = (id: string, student: number, shared: number, teacher = 0.9): DeviceRound => ({ id, shift: 'rotation', examples: 0, evaluated: 1000, studentAccuracy: student, teacherAccuracy: teacher, gap: teacher - student, trafficStudentAccuracy: NaN, sharedAccuracy: shared, release: 1 });
  const row = (n: number, devs: DeviceRound[]): RoundRow => ({ round: n, roundId: `r${n}`, state: 'released', release: n, exampleCount: 0, ingested: 0, rolloutSeconds: 1, roundSeconds: 1, devices: devs });

  it("measures the cohort student against the shared round-0 student's gap, and against the shared student now", () => {
    // Round 0: shared 0.5 (gap 0.4), its cohort student already 0.6. Round 3: cohort 0.87, shared 0.8.
    const rows = [row(0, [cell('d1', 0.6, 0.5), cell('d2', 0.7, 0.7)]), row(3, [cell('d1', 0.87, 0.8), cell('d2', 0.75, 0.8)])];
    const [g1, g2] = gapsOf(devices, rows);
    expect(g1!.round0Gap).toBeCloseTo(0.4);
    expect(g1!.closed).toBeCloseTo((0.4 - 0.03) / 0.4);
    expect(g1!.sharedClosed).toBeCloseTo((0.4 - 0.1) / 0.4);
    expect(g1!.beatsShared).toBe(true);
    expect(g2!.beatsShared).toBe(false);
    const lines = summaryLines({ version: 2, startedAt: '', seconds: 1, cloudApiUrl: '', adminTokenFile: '', teacher: { file: '' }, settings: {}, pools: { source: 'mnist:test', perDevice: [] }, devices, rows, gaps: [g1!, g2!], examples: [], stoppedBy: 'rounds' });
    expect(lines.join('\n')).toContain('the cohort student beats it on this device');
    expect(lines.join('\n')).toContain('the cohort student does not beat it on this device');
  });
});
