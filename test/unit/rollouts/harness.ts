/**
 * A rollout engine over the real registry (SQLite file, committed migrations), real signed releases and
 * the real ingest, with a recording MQTT publisher, for fake-timer scenarios. `restart()` is a cloud
 * restart: a new process on the same DB whose embedded broker lost every retained message.
 */
import { afterEach, beforeEach, vi } from 'vitest';
import { and, eq } from 'drizzle-orm';
import { Ingest } from '../../../cloud/fleet/ingest.js';
import { deviceCompatOf } from '../../../cloud/fleet/device-compat.js';
import { ReleasePublisher } from '../../../cloud/fleet/publisher.js';
import { RolloutEngine, type RolloutEngineDeps } from '../../../cloud/rollouts/engine.js';
import { rolloutDevices, rolloutTransitions } from '../../../cloud/registry/schema.js';
import type { DeviceEvent } from '../../../shared/protocol/index.js';
import { FakeMqtt, FleetFixture, eventPayload, statusPayload, telemetryPayload } from '../fleet/fixtures.js';

export const ids = (n: number, prefix = 'd') => Array.from({ length: n }, (_, i) => `${prefix}${String(i + 1).padStart(2, '0')}`);

export class RolloutHarness {
  readonly fx = new FleetFixture();
  fake = new FakeMqtt();
  ingest!: Ingest;
  engine!: RolloutEngine;
  readonly shas: Record<number, string> = {};
  private extra: Partial<RolloutEngineDeps> = {};

  async boot(extra: Partial<RolloutEngineDeps> = this.extra): Promise<void> {
    this.extra = extra;
    this.ingest = await Ingest.create({ registry: this.fx.registry });
    const publisher = new ReleasePublisher({ mqtt: this.fake, dataDir: this.fx.dir, compatOf: (id) => deviceCompatOf(this.fx.registry, id) });
    this.engine = await RolloutEngine.create({ registry: this.fx.registry, publisher, reissue: this.fx.reissue, signals: this.ingest, tickSeconds: 5, ...extra });
  }

  async shutdown(): Promise<void> {
    await this.engine.dispose();
    await this.ingest.dispose();
  }

  /** A cloud restart after `downSeconds`: same DB file, a broker that lost its retained messages. */
  async restart(downSeconds = 0): Promise<void> {
    await this.shutdown();
    this.fx.reopen();
    this.fake = new FakeMqtt();
    if (downSeconds) await vi.advanceTimersByTimeAsync(downSeconds * 1000);
    await this.boot();
  }

  addRelease(seq: number, parent: number | null = null): void {
    this.shas[seq] = this.fx.addRelease(seq, { parent }).sha256;
  }

  /** A device message through ingest, committed at once (ingest batches status and telemetry writes). */
  async feed(...args: Parameters<Ingest['handleMessage']>): Promise<void> {
    void this.ingest.handleMessage(...args);
    await this.ingest.flush();
  }

  /** What a device daemon reports after installing `seq`: status, event, then a healthy heartbeat. */
  async install(id: string, seq: number): Promise<void> {
    await this.feed('status', id, statusPayload(id, seq, this.shas[seq]));
    await this.feed('events', id, eventPayload(id, 'installed', seq));
    await this.feed('telemetry', id, telemetryPayload(id, seq, 'ok'));
    await this.engine.idle();
  }

  async event(id: string, type: DeviceEvent['type'], seq: number | null, reason?: DeviceEvent['reason']): Promise<void> {
    await this.feed('events', id, eventPayload(id, type, seq, reason));
    await this.engine.idle();
  }

  /** The device connects (online status) running `seq`. */
  async online(id: string, seq: number | null): Promise<void> {
    await this.feed('status', id, statusPayload(id, seq, seq === null ? null : this.shas[seq]));
    await this.engine.idle();
  }

  async advance(seconds: number): Promise<void> {
    await vi.advanceTimersByTimeAsync(seconds * 1000);
    await this.engine.idle();
  }

  async view(id: string) {
    return (await this.engine.get(id))!;
  }

  row(rolloutId: string, deviceId: string) {
    return this.fx.db.select().from(rolloutDevices).where(and(eq(rolloutDevices.rolloutId, rolloutId), eq(rolloutDevices.deviceId, deviceId))).get()!;
  }

  /** The transition log of one device in one rollout, oldest first, as `from→to`. */
  log(rolloutId: string, deviceId: string | null): string[] {
    return this.fx.db
      .select()
      .from(rolloutTransitions)
      .where(eq(rolloutTransitions.rolloutId, rolloutId))
      .orderBy(rolloutTransitions.id)
      .all()
      .filter((t) => t.deviceId === deviceId)
      .map((t) => `${t.fromState}→${t.toState}`);
  }

  /** Devices of wave `w` of a rollout. */
  async wave(rolloutId: string, w: number): Promise<string[]> {
    return (await this.view(rolloutId)).devices.filter((d) => d.wave === w).map((d) => d.deviceId);
  }

  async dispose(): Promise<void> {
    await this.shutdown();
    this.fx.dispose();
  }
}

/**
 * Registers beforeEach/afterEach for fake-time scenarios: time starts at 2030-01-01, a fresh harness has
 * releases 1 and 2 (2's parent is 1) and whatever `setup` adds; `use` receives it.
 */
export function onFakeTime(use: (h: RolloutHarness) => void, setup: (h: RolloutHarness) => void = () => undefined): void {
  let h: RolloutHarness;
  beforeEach(() => {
    vi.useFakeTimers({ now: new Date('2030-01-01T00:00:00Z') });
    h = new RolloutHarness();
    h.addRelease(1);
    h.addRelease(2, 1);
    setup(h);
    use(h);
  });
  afterEach(async () => {
    await h.dispose();
    vi.useRealTimers();
  });
}
