import { EventEmitter } from 'node:events';
import { Registry as PromRegistry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { FleetSignalMap } from '../../../cloud/fleet/ingest.js';
import { ReleasePublisher } from '../../../cloud/fleet/publisher.js';
import { RolloutEngine } from '../../../cloud/rollouts/engine.js';
import { EngineCpuMeter } from '../../../cloud/rollouts/meter.js';
import { eq } from 'drizzle-orm';
import { devices, rolloutDevices } from '../../../cloud/registry/schema.js';
import type { Status, Telemetry } from '../../../shared/protocol/index.js';
import { FakeMqtt, FleetFixture, MODEL } from '../fleet/fixtures.js';

/**
 * Issue 8, "busy before the rollout": every device status and telemetry reaches the rollout engine. With
 * no active rollout it must cost no DB statement, and with one, a bounded number whatever the fleet size
 * (no scan of every member per event). Statements are counted at the SQLite driver (every drizzle query
 * prepares one), not timed.
 */
describe('rollout engine: DB statements per device signal', () => {
  let fx: FleetFixture;
  let engine: RolloutEngine;
  let metrics: PromRegistry;
  const signals = new EventEmitter<FleetSignalMap>();
  let statements: string[] = [];

  beforeEach(() => {
    fx = new FleetFixture();
    metrics = new PromRegistry();
  });
  afterEach(async () => {
    await engine?.dispose();
    fx.dispose();
  });

  function addFleet(n: number, group: string, prefix: string): string[] {
    const ids = Array.from({ length: n }, (_, i) => `${prefix}-${i}`);
    const at = new Date().toISOString();
    for (let i = 0; i < n; i += 500) {
      fx.db.insert(devices).values(ids.slice(i, i + 500).map((id) => ({ id, groups: [group], credentialHash: 'x', online: true, runningSeq: 1, desiredSeq: 1, lastSeen: at }))).run();
    }
    return ids;
  }

  async function boot(): Promise<void> {
    const publisher = new ReleasePublisher({ mqtt: new FakeMqtt(), dataDir: fx.dir });
    // A tick of an hour: only the signals run here.
    engine = await RolloutEngine.create({ registry: fx.registry, publisher, reissue: fx.reissue, signals, tickSeconds: 3600, republishOnStart: false, metrics });
    const sqlite = fx.registry.sqlite;
    const prepare = sqlite.prepare.bind(sqlite);
    sqlite.prepare = ((sql: string) => {
      statements.push(sql);
      return prepare(sql);
    }) as typeof sqlite.prepare;
  }

  function status(deviceId: string, state: Status['state'] = 'online'): void {
    const s: Status = { v: 1, deviceId, state, model: MODEL, release: 1, sha256: null, at: new Date().toISOString() };
    signals.emit('status', { deviceId, status: s, retain: false, wentOnline: state === 'online' });
  }

  function telemetry(deviceId: string): void {
    signals.emit('telemetry', { deviceId, telemetry: { deviceId } as Telemetry });
  }

  /**
   * Waits until the engine's queue is idle and no statement ran for 60 ms: work a create started outside the
   * queue (publishes completing later on a loaded machine) must not be counted against the next signal.
   */
  async function settle(): Promise<void> {
    for (let i = 0; i < 100; i++) {
      await engine.idle();
      const before = statements.length;
      await new Promise((r) => setTimeout(r, 60));
      await engine.idle();
      if (statements.length === before) return;
    }
  }

  /** Statements run for `fn`'s signals once the engine's queue is idle. */
  async function count(fn: () => void): Promise<string[]> {
    await settle();
    statements = [];
    fn();
    await engine.idle();
    return statements;
  }

  it('no rollout at all: statuses and telemetry of 2,000 devices read nothing', async () => {
    const ids = addFleet(2000, 'lab', 'd');
    await boot();
    status(ids[0]!); // the first signal fills the engine's cache: two statements, once
    expect(await count(() => status(ids[1]!))).toEqual([]);
    const ran = await count(() => {
      for (const id of ids) {
        status(id);
        telemetry(id);
      }
      for (const id of ids.slice(0, 500)) status(id, 'offline');
    });
    expect(ran).toEqual([]);
    const events = (await metrics.getSingleMetric('apprentice_rollout_engine_events_total')!.get()).values;
    expect(Object.fromEntries(events.map((v) => [v.labels.kind, v.value]))).toEqual({ status: 2 + 2000 + 500, telemetry: 2000 });
    expect(await metrics.getSingleMetricAsString('apprentice_rollout_engine_cpu_seconds_total')).toMatch(/part="signal"/);
  });

  it('with an active rollout: a bounded number of indexed statements per signal, the same at 200 and 2,000 members', async () => {
    fx.addRelease(1);
    fx.addRelease(2, { parent: 1 });
    const members = addFleet(2000, 'lab', 'm');
    const small = addFleet(200, 'small', 's');
    const others = addFleet(100, 'other', 'o');
    await boot();
    await engine.create({ model: MODEL, releaseSeq: 2, target: { kind: 'group', group: 'lab' }, waves: [0.01, 1], soakSeconds: 3600 });
    await engine.create({ model: MODEL, releaseSeq: 2, target: { kind: 'group', group: 'small' }, waves: [0.01, 1], soakSeconds: 3600 });
    status(others[0]!); // refills the cache after the creates
    // Waves are assigned by a hash of the (random) rollout id: the members outside the current wave (the
    // canaries, 1%) are read back, not assumed. A canary's telemetry rightly queues an evaluation.
    const canaries = new Set(fx.db.select({ id: rolloutDevices.deviceId }).from(rolloutDevices).where(eq(rolloutDevices.wave, 0)).all().map((r) => r.id));
    const outsideWave = (ids: string[]) => ids.filter((id) => !canaries.has(id)).slice(-5);
    expect(canaries.size).toBe(20 + 2);
    // The statements themselves are the failure message: a count alone would not say what ran.
    const per = async (id: string, kind: 'status' | 'telemetry') => {
      const ran = await count(() => (kind === 'status' ? status(id) : telemetry(id)));
      return { length: ran.length, ran: ran.map((q) => q.slice(0, 120)).join('\n') };
    };
    const n = async (id: string, kind: 'status' | 'telemetry'): Promise<[number, string]> => {
      const r = await per(id, kind);
      return [r.length, `${kind} of ${id}:\n${r.ran}`];
    };
    // A device in no rollout: converge (its row, its held-back rows) and its memberships, by index.
    for (const id of others.slice(1, 20)) {
      const [k, why] = await n(id, 'status');
      expect(k, why).toBeLessThanOrEqual(3);
    }
    for (const id of others.slice(1, 20)) {
      const [k, why] = await n(id, 'telemetry');
      expect(k, why).toBe(1);
    }
    // A member outside the current wave: the same, whether its rollout has 2,000 members or 200.
    for (const id of [...outsideWave(members), ...outsideWave(small)]) {
      const [k, why] = await n(id, 'telemetry');
      expect(k, why).toBe(1);
    }
    // A member's status also queues one evaluation of the active rollouts (coalesced; per rollout, not per member).
    const big: number[] = [];
    const little: number[] = [];
    for (const id of outsideWave(members)) big.push((await per(id, 'status')).length);
    for (const id of outsideWave(small)) little.push((await per(id, 'status')).length);
    expect(big).toEqual(little);
    expect(Math.max(...big)).toBeLessThan(40);
  });
});

describe('EngineCpuMeter', () => {
  /** Burns at least `ms` of this process's CPU time. */
  function burn(ms: number): void {
    const t0 = process.cpuUsage();
    for (;;) {
      const d = process.cpuUsage(t0);
      if (d.user + d.system >= ms * 1000) return;
    }
  }

  it('counts engine code, not what runs elsewhere while the engine awaits a publish', async () => {
    const metrics = new PromRegistry();
    const meter = new EngineCpuMeter(metrics);
    meter.resume();
    burn(40);
    // Another module's work (ingest, the API) while the engine waits for a PUBACK: not the engine's.
    await meter.waitOn(new Promise<void>((r) => setTimeout(() => (burn(80), r()), 0)));
    burn(40);
    meter.pauseNow();
    meter.sync(() => burn(20));
    const values = (await metrics.getSingleMetric('apprentice_rollout_engine_cpu_seconds_total')!.get()).values;
    const by = Object.fromEntries(values.map((v) => [v.labels.part, v.value]));
    expect(by.step).toBeGreaterThanOrEqual(0.08);
    expect(by.step).toBeLessThan(0.08 + 0.06); // far from the 0.16 it would be with the 80 ms counted
    expect(by.signal).toBeGreaterThanOrEqual(0.02);
  });
});
