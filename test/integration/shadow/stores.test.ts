/**
 * The registry side of shadow evaluation (issue 13) on both registry dialects (issue 15): the audit and
 * disagreement samples a round and a shadow run read (newest per device, by window function), the
 * figures they record per release line, and the on-device shadow runs with their devices.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { devicesOf, getRun, insertRun, listRuns, recordShadowTelemetry, runOfRollout, setDevice, setRun, shadowingRunOf } from '../../../cloud/shadow/run-store.js';
import { devicesRunning, recordReleaseShadowEval, recordShadowEval, selectAuditRows, selectDisagreementRows, shadowEvalOfRelease, shadowEvalOfRound, type NewShadowEval } from '../../../cloud/shadow/store.js';
import type { SignedManifest } from '../../../shared/protocol/index.js';
import { registryDialects } from '../../helpers/dialects.js';
import { insertExamples, insertModel } from '../../unit/rounds/helpers.js';

const dialects = registryDialects();
const x = (v: number) => Float32Array.of(v, v, v, v);
const at = (minute: number) => `2030-01-01T00:${String(minute).padStart(2, '0')}:00.000Z`;

async function addDevice(reg: StoreRegistry, id: string, runningSeq: number | null = null, revoked = false): Promise<void> {
  await reg.q.insert(reg.t.devices).values({ id, groups: [], credentialHash: 'x', runningSeq, revoked });
}

async function addRelease(reg: StoreRegistry, seq: number, o: { model?: string; roundId?: string | null; cohort?: string | null } = {}): Promise<void> {
  await reg.q.insert(reg.t.releases).values({ model: o.model ?? 'mnist', seq, sha256: `sha-${seq}`, bytes: 1, quantization: 'fp32', metrics: {}, manifest: { release: seq }, signature: {}, roundId: o.roundId ?? null, cohort: o.cohort ?? null, artifactPath: `a/${seq}` });
}

const evalRow = (deviceId: string | null, delta: number, cohort: string | null = null): NewShadowEval => ({
  scope: deviceId ? 'device' : 'cohort',
  deviceId,
  cohort,
  samples: 60,
  judgedBy: deviceId ? 'device' : null,
  runningSeq: deviceId ? 1 : null,
  candidateAccuracy: null,
  runningAccuracy: null,
  agreement: 0.5,
  delta,
  deltaLow: delta - 0.25,
  deltaHigh: delta + 0.25,
});

describe.each(dialects)('shadow evaluation stores on $name', (d) => {
  let reg: StoreRegistry;
  beforeEach(async (ctx) => {
    reg = await d.open(ctx);
    await insertModel(reg);
    await insertModel(reg, { name: 'other' });
  });
  afterEach(() => d.close());

  it('audit samples: the newest per device, grouped by device, only audit rows of the model and of the asked devices', async () => {
    // Device b: 5 audit rows at minutes 0..4; device a: 3 audit rows and hard examples that are not audit samples.
    const b = [];
    for (let m = 0; m < 5; m++) b.push(...(await insertExamples(reg, 'mnist', [x(m)], [], at(m), { deviceId: 'b', reason: 'audit' })));
    const a = [];
    for (let m = 0; m < 3; m++) a.push(...(await insertExamples(reg, 'mnist', [x(m)], [], at(10 + m), { deviceId: 'a', reason: 'audit' })));
    await insertExamples(reg, 'mnist', [x(9)], [], at(30), { deviceId: 'a', reason: 'low_confidence' });
    await insertExamples(reg, 'other', [x(9)], [], at(30), { deviceId: 'a', reason: 'audit' });

    const rows = await selectAuditRows(reg, 'mnist', 2);
    expect(rows.map((r) => [r.deviceId, r.id])).toEqual([
      ['a', a[2]],
      ['a', a[1]],
      ['b', b[4]],
      ['b', b[3]],
    ]);
    // Bytes come back as Buffers on both dialects.
    expect(Buffer.isBuffer(rows[0]!.input)).toBe(true);
    expect(Array.from(new Float32Array(new Uint8Array(rows[0]!.input).buffer))).toEqual([2, 2, 2, 2]);
    expect((await selectAuditRows(reg, 'mnist', 10, ['b'])).map((r) => r.id)).toEqual([...b].reverse());
    expect(await selectAuditRows(reg, 'mnist', 10, [])).toEqual([]);
    expect(await selectAuditRows(reg, 'mnist', 0)).toEqual([]);
  });

  it('disagreement samples: inside the run window only, with the release that answered', async () => {
    const until = '2030-01-01T01:00:00.000Z';
    await insertExamples(reg, 'mnist', [x(1)], [], at(1), { deviceId: 'a', reason: 'shadow_disagreement' }); // before the run
    const [inWindow] = await insertExamples(reg, 'mnist', [x(2)], [], at(20), { deviceId: 'a', reason: 'shadow_disagreement' });
    await insertExamples(reg, 'mnist', [x(3)], [], at(21), { deviceId: 'a', reason: 'audit' });
    await insertExamples(reg, 'mnist', [x(4)], [], at(22), { deviceId: 'z', reason: 'shadow_disagreement' }); // not asked
    await reg.q.update(reg.t.examples).set({ releaseSeq: 7 });
    const rows = await selectDisagreementRows(reg, 'mnist', ['a', 'b'], at(10), until, 5);
    expect(rows.map((r) => [r.id, r.deviceId, r.releaseSeq])).toEqual([[inWindow, 'a', 7]]);
    // captured after the window closed: left out (insertExamples captures "now", which is before 2030).
    expect(await selectDisagreementRows(reg, 'mnist', ['a'], at(10), '2000-01-01T00:00:00.000Z', 5)).toEqual([]);
  });

  it('devices running a release of the model, without revoked ones', async () => {
    await addRelease(reg, 1);
    await addRelease(reg, 2, { model: 'other' });
    await addDevice(reg, 'a', 1);
    await addDevice(reg, 'b', 2);
    await addDevice(reg, 'c', 1, true);
    await addDevice(reg, 'd');
    const running = await devicesRunning(reg, 'mnist');
    expect(running.map((r) => [r.deviceId, r.release.seq])).toEqual([['a', 1]]);
    expect(await devicesRunning(reg, 'mnist', ['b', 'd'])).toEqual([]);
  });

  it("a round's figures per line are replaced atomically, and a release reads its own or its round's line", async () => {
    await recordShadowEval(reg, 'round-1', 'mnist', [evalRow(null, 0), evalRow('a', 0.1), evalRow('b', -0.1)], null);
    await recordShadowEval(reg, 'round-1', 'mnist', [evalRow(null, 0.2, 'lab'), evalRow('a', 0.2, 'lab')], 'lab');
    // A retried round evaluates again: the base line's rows are replaced, the cohort line's kept.
    await recordShadowEval(reg, 'round-1', 'mnist', [evalRow(null, 0.05), evalRow('a', 0.05)], null);
    const all = await shadowEvalOfRound(reg, 'round-1');
    expect(all.map((r) => [r.line, r.scope, r.deviceId, r.delta])).toEqual([
      [null, 'cohort', null, 0.05],
      [null, 'device', 'a', 0.05],
      ['lab', 'cohort', null, 0.2],
      ['lab', 'device', 'a', 0.2],
    ]);
    expect((await shadowEvalOfRound(reg, 'round-1', 'lab')).map((r) => r.deviceId)).toEqual([null, 'a']);

    await addRelease(reg, 1, { roundId: 'round-1' });
    await addRelease(reg, 2, { roundId: 'round-1', cohort: 'lab' });
    await addRelease(reg, 3);
    expect((await shadowEvalOfRelease(reg, 1)).map((r) => [r.line, r.deviceId])).toEqual([[null, null], [null, 'a']]);
    expect((await shadowEvalOfRelease(reg, 2)).map((r) => [r.line, r.deviceId])).toEqual([['lab', null], ['lab', 'a']]);
    expect(await shadowEvalOfRelease(reg, 3)).toEqual([]);
    // A shadow switch's own evidence for its re-issue wins over any round's.
    await recordReleaseShadowEval(reg, 3, 'shadow:run-1', 'mnist', null, [evalRow('b', -0.3), evalRow('c', 0.3)]);
    await recordReleaseShadowEval(reg, 3, 'shadow:run-1', 'mnist', null, [evalRow('b', -0.4), evalRow('c', 0.4)]);
    expect((await shadowEvalOfRelease(reg, 3)).map((r) => [r.deviceId, r.delta])).toEqual([['b', -0.4], ['c', 0.4]]);
    expect((await shadowEvalOfRelease(reg, 3, ['c'])).map((r) => r.deviceId)).toEqual(['c']);
    expect((await shadowEvalOfRelease(reg, 1, [])).map((r) => r.deviceId)).toEqual([null]);
  });

  it('on-device shadow runs: created with their devices in one transaction, compare-and-set states, device figures', async () => {
    await addRelease(reg, 1);
    const signed = { manifest: { artifact: { sha256: 'cand' } }, signature: {} } as unknown as SignedManifest;
    const base = { model: 'mnist', releaseSeq: 1, signed, target: { kind: 'all' }, policy: { waves: [1] }, until: '2030-01-01T01:00:00.000Z', autoSwitch: true, minAgreement: 0.5, minRequests: 20 };
    const now = new Date('2030-01-01T00:00:00.000Z');
    const run = await insertRun(reg, { ...base, id: 'run-1', shadowSeq: 9 }, ['pi-2', 'pi-1'], now);
    expect(run).toMatchObject({ id: 'run-1', state: 'shadowing', shadowSeq: 9, createdAt: now.toISOString() });
    // A run whose device list is refused (a duplicate device) leaves no run behind.
    await expect(insertRun(reg, { ...base, id: 'run-2', shadowSeq: 10 }, ['pi-1', 'pi-1'], now)).rejects.toThrow();
    expect(await getRun(reg, 'run-2')).toBeUndefined();

    expect((await devicesOf(reg, 'run-1')).map((r) => [r.deviceId, r.state])).toEqual([['pi-1', 'pending'], ['pi-2', 'pending']]);
    await setDevice(reg, 'run-1', 'pi-1', { state: 'sent' }, now);
    expect((await devicesOf(reg, 'run-1', ['sent'])).map((r) => r.deviceId)).toEqual(['pi-1']);
    expect((await shadowingRunOf(reg, 'pi-1', 9))?.id).toBe('run-1');
    expect(await shadowingRunOf(reg, 'pi-1', 8)).toBeUndefined();

    const telemetry = { model: 'mnist', release: 9, sha256: 'cand', until: base.until, state: 'running' as const, requests: 100, agreements: 80, skipped: 1, latencyMs: { p50: 0.5, p95: 1.5 } };
    expect(await recordShadowTelemetry(reg, 'pi-1', telemetry, now)).toBe('run-1');
    expect(await recordShadowTelemetry(reg, 'pi-1', { ...telemetry, sha256: 'another' }, now)).toBeUndefined();
    expect(await recordShadowTelemetry(reg, 'pi-9', telemetry, now)).toBeUndefined();
    expect((await devicesOf(reg, 'run-1'))[0]).toMatchObject({ deviceId: 'pi-1', state: 'running', requests: 100, agreements: 80, skipped: 1, latencyP50Ms: 0.5, latencyP95Ms: 1.5 });

    expect(await setRun(reg, 'run-1', 'shadowing', { state: 'switched', switchedSeq: 11, rolloutId: 'ro-1' }, now)).toBe(true);
    expect(await setRun(reg, 'run-1', 'shadowing', { state: 'aborted' }, now)).toBe(false); // already moved
    expect(await runOfRollout(reg, 'ro-1')).toMatchObject({ id: 'run-1', state: 'switched', switchedSeq: 11 });
    expect(await shadowingRunOf(reg, 'pi-1', 9)).toBeUndefined();
    expect((await listRuns(reg, { state: 'switched' })).map((r) => r.id)).toEqual(['run-1']);
    expect(await listRuns(reg, { state: 'shadowing' })).toEqual([]);
  });
});
