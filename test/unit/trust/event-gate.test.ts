/**
 * Issue 10, compatibility: event reasons newer than protocol 1 (`crash_loop`, `sequence_jump`,
 * `assignment_mismatch`) reach only a cloud that accepts them. Until the cloud's retained info is known
 * the device holds them; a cloud that accepts them gets them as is, an older one (info without the
 * feature, or no info at all) gets the older reason with the real one in `detail`, which its strict
 * schema parses.
 */
import { EventEmitter } from 'node:events';
import type { MqttClient } from 'mqtt';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { eventEffect } from '../../../cloud/rollouts/policy.js';
import { EventGate } from '../../../edge/status/event-gate.js';
import { CLOUD_FEATURES, NEWER_EVENT_REASONS, PROTOCOL_VERSION, cloudInfo, eventForCloud, eventSchema, type CloudInfo, type DeviceEvent } from '../../../shared/protocol/index.js';

/** The event schema of a cloud from before these reasons: the same strict object with the protocol-1 enum. */
const olderCloudSchema = eventSchema.extend({
  reason: eventSchema.shape.reason.unwrap().exclude(Object.keys(NEWER_EVENT_REASONS) as never).optional(),
});

const at = new Date().toISOString();
const ev = (type: DeviceEvent['type'], reason?: DeviceEvent['reason'], release = 1): DeviceEvent => ({ v: PROTOCOL_VERSION, deviceId: 'pi-1', at, type, model: 'm', release, sha256: null, ...(reason ? { reason, detail: 'why' } : {}) });
const older: CloudInfo = { v: PROTOCOL_VERSION, protocolVersion: 2, accepts: [CLOUD_FEATURES.statusExt, CLOUD_FEATURES.receipts], at };
const current = cloudInfo(new Date());

class FakeClient extends EventEmitter {
  connected = false;
  connect(): void {
    this.connected = true;
    this.emit('connect');
  }
}

function gate(opts: { waitMs?: number; maxHeld?: number } = {}) {
  const client = new FakeClient();
  const sent: DeviceEvent[] = [];
  let info: CloudInfo | undefined;
  const metrics = new Registry();
  const g = new EventGate({ client: client as unknown as MqttClient, info: () => info, send: (e) => sent.push(e), metrics, waitMs: opts.waitMs ?? 10_000, ...(opts.maxHeld ? { maxHeld: opts.maxHeld } : {}) });
  g.start();
  return { g, client, sent, metrics, setInfo: (i: CloudInfo | undefined) => ((info = i), g.cloudInfoChanged()) };
}

afterEach(() => vi.useRealTimers());

describe('eventForCloud', () => {
  it('keeps a newer reason for a cloud that accepts it, maps it for an older one, and leaves older reasons alone', () => {
    for (const reason of Object.keys(NEWER_EVENT_REASONS) as Array<NonNullable<DeviceEvent['reason']>>) {
      const type = reason === 'crash_loop' ? 'rolled_back' : 'rejected';
      const e = ev(type, reason);
      expect(eventForCloud(e, current)).toEqual(e);
      for (const info of [older, undefined]) {
        const out = eventForCloud(e, info);
        expect(out.reason).toBe(NEWER_EVENT_REASONS[reason]!.older);
        expect(out.detail).toBe(`${reason}: why`);
        expect(olderCloudSchema.safeParse(out).success).toBe(true);
        // The older cloud's rollout reacts as the newer one would.
        expect(eventEffect(out)).toBe(eventEffect(e));
      }
      expect(olderCloudSchema.safeParse(e).success).toBe(false); // why the mapping exists
    }
    const plain = ev('rejected', 'hash_mismatch');
    expect(eventForCloud(plain, undefined)).toEqual(plain);
    const long = { ...ev('rejected', 'sequence_jump'), detail: 'x'.repeat(1024) };
    expect(eventSchema.safeParse(eventForCloud(long, undefined)).success).toBe(true);
  });
});

describe('EventGate', () => {
  it('holds a newer reason (and what follows it) until the cloud info arrives; a cloud that accepts it gets it as is', () => {
    const { g, client, sent, setInfo } = gate();
    g.emit(ev('installed'));
    expect(sent.map((e) => e.type)).toEqual(['installed']); // nothing to hold: at once
    client.connect();
    g.emit(ev('rolled_back', 'crash_loop', 2));
    g.emit(ev('installed', undefined, 3));
    expect(sent).toHaveLength(1);
    expect(g.pending).toBe(2);
    setInfo(current);
    expect(sent.map((e) => [e.type, e.reason, e.release])).toEqual([['installed', undefined, 1], ['rolled_back', 'crash_loop', 2], ['installed', undefined, 3]]);
    g.emit(ev('rejected', 'sequence_jump', 4));
    expect(sent.at(-1)).toMatchObject({ reason: 'sequence_jump' });
  });

  it('an older cloud (info without the feature) gets the older reason, counted', async () => {
    const { g, client, sent, setInfo, metrics } = gate();
    client.connect();
    g.emit(ev('rejected', 'sequence_jump'));
    expect(sent).toHaveLength(0);
    setInfo(older);
    expect(sent).toEqual([expect.objectContaining({ reason: 'malformed_manifest', detail: 'sequence_jump: why' })]);
    expect(olderCloudSchema.safeParse(sent[0]).success).toBe(true);
    expect(await metrics.getSingleMetricAsString('apprentice_edge_events_reason_mapped_total')).toMatch(/reason="sequence_jump"} 1/);
  });

  it('no cloud info at all (a cloud older than the info topic): released with older reasons after the wait', () => {
    vi.useFakeTimers();
    const { g, client, sent } = gate({ waitMs: 5_000 });
    g.emit(ev('rolled_back', 'crash_loop'));
    vi.advanceTimersByTime(60_000);
    expect(sent).toHaveLength(0); // not connected yet: the wait starts at the connect
    client.connect();
    vi.advanceTimersByTime(4_999);
    expect(sent).toHaveLength(0);
    vi.advanceTimersByTime(1);
    expect(sent).toEqual([expect.objectContaining({ type: 'rolled_back', reason: 'inference_errors', detail: 'crash_loop: why' })]);
    g.emit(ev('rejected', 'assignment_mismatch'));
    expect(sent.at(-1)).toMatchObject({ reason: 'malformed_manifest' });
  });

  it('the held bound and the stop release what is held (never lost)', () => {
    const a = gate({ maxHeld: 3 });
    for (let i = 1; i <= 3; i++) a.g.emit(ev('rejected', 'sequence_jump', i));
    expect(a.sent.map((e) => e.release)).toEqual([1, 2, 3]);
    const b = gate();
    b.g.emit(ev('rolled_back', 'crash_loop'));
    b.g.stop();
    expect(b.sent).toHaveLength(1);
    expect(b.sent[0]!.reason).toBe('inference_errors');
  });
});
