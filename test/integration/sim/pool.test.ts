import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimFleet, SimPool } from '../../../edge/sim/index.js';
import { SIM_CAPABILITIES } from '../../../edge/sim/device.js';
import { FaultWorld, MODEL } from '../../e2e/fault-harness.js';
import { waitFor } from '../../helpers/net.js';
import { eq } from 'drizzle-orm';
import { devices } from '../../../cloud/registry/schema.js';

/**
 * `apprentice sim` workers against real Mosquitto and a real cloud (API, ingest, rollout engine): six
 * devices over two worker processes, provisioned through POST /v1/devices; one is switched off after its first
 * connect, one fails its self-test. A waves rollout must install on the four healthy devices, quarantine the failing one and
 * time out the one that never connected, then complete.
 */
describe('sim workers through the real cloud', () => {
  let w: FaultWorld;
  let pool: SimPool;
  const prefix = `simw${Date.now().toString(36)}`;
  const id = (i: number) => SimFleet.deviceId(prefix, i);

  beforeAll(async () => {
    w = await FaultWorld.create();
    const cloud = w.cloud!;
    pool = new SimPool({
      devices: 6,
      workers: 2,
      mqttUrl: cloud.brokerUrl,
      dataDir: `${w.dir}/sim`,
      trustedKeys: [],
      cloud: { url: cloud.apiUrl, token: cloud.adminToken },
      prefix,
      shares: { switchedOff: 1 / 6, failSelfTest: 1 / 6 },
      telemetrySeconds: 1,
      statsMs: 200,
    });
    await pool.start();
  }, 60_000);
  afterAll(async () => {
    await pool?.stop();
    await w?.dispose();
  });

  it('spreads the devices over two processes, one switched off and one failing, by device index; protocol-2 status', async () => {
    expect(pool.pids).toHaveLength(2);
    expect(new Set(pool.pids).size).toBe(2);
    expect(pool.pids).not.toContain(process.pid);
    const s = await pool.refresh();
    expect(s).toMatchObject({ workers: 2, devices: 5, connected: 5, switchedOff: 1, neverConnect: 0, failSelfTest: 1 });
    // Every device was provisioned; the switched-off one was online once and is now offline.
    const res = await fetch(`${w.cloud!.apiUrl}/v1/devices`, { headers: { authorization: `Bearer ${w.cloud!.adminToken}` } });
    const body = (await res.json()) as { devices: { id: string; online: boolean }[] };
    const mine = body.devices.filter((d) => d.id.startsWith(prefix)).sort((a, b) => a.id.localeCompare(b.id));
    expect(mine.map((d) => d.id)).toEqual([0, 1, 2, 3, 4, 5].map(id));
    await waitFor(() => w.registry.db.select().from(devices).all().filter((d) => d.id.startsWith(prefix) && d.online).length === 5, 10_000, { message: 'five online' });
    // They speak protocol 2 to this cloud: the update path's capabilities, not receipts or key sets (no outbox, no key-set follower).
    const row = w.registry.db.select().from(devices).where(eq(devices.id, id(0))).get()!;
    expect(row).toMatchObject({ online: true, protocolVersion: 2, trust: { keysetVersion: null, state: 'trusted_keys' } });
    expect(row.capabilities).toEqual([...SIM_CAPABILITIES]);
    expect(row.capabilities).toContain('manifest.lineage-source');
    expect(row.capabilities).not.toContain('receipts');
  });

  it('a waves rollout: healthy devices install, the failing one is quarantined, the switched-off one times out, completed', async () => {
    const rel = w.addRelease({ seed: 31 });
    const r = await w.cloud!.rollouts.create({ model: MODEL, releaseSeq: rel.seq, waves: [0.34, 1], soakSeconds: 1, deviceTimeoutSeconds: 8, canaryGraceSeconds: 2 });
    await waitFor(async () => (await w.cloud!.rollouts.get(r.id))?.rollout.state === 'completed', 45_000, { intervalMs: 200, message: 'rollout completed' }).catch(async (err: unknown) => {
      const v = await w.cloud!.rollouts.get(r.id);
      throw new Error(`${(err as Error).message}: ${JSON.stringify(v?.counts)} ${v?.rollout.pauseReason ?? ''}`);
    });
    const v = (await w.cloud!.rollouts.get(r.id))!;
    expect(v.counts).toMatchObject({ installed: 4, quarantined: 1, timed_out: 1, failed: 0 });
    const byState = (s: string) => v.devices.filter((d) => d.state === s);
    expect(byState('quarantined')[0]!.reason).toMatch(/^self_test_failed/);
    const s = await pool.refresh();
    expect(s.running[String(rel.seq)]).toBe(4);
    expect(s.installed).toBe(4);
    expect(s.rejected).toBeGreaterThanOrEqual(1);
    // The plan by device index is the same in every run: the quarantined and timed-out devices are known.
    const off = byState('timed_out').map((d) => d.deviceId);
    const failing = byState('quarantined').map((d) => d.deviceId);
    expect(off).toHaveLength(1);
    expect(failing).toHaveLength(1);
    expect(off[0]).not.toBe(failing[0]);
  }, 60_000);
});
