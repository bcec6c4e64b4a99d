/**
 * Issue 15 item 6, second proof: three `apprentice cloud` processes with cluster.enabled on one throwaway
 * PostgreSQL registry ingest device examples through the shared subscription (`$share/cloud/...`, MQTT 5,
 * Mosquitto). Devices keep sending; one replica is stopped (SIGSTOP, 600 ms, so it certainly holds messages
 * in flight) and killed with SIGKILL in the middle; they keep sending.
 * Each device is an outbox in miniature (test/helpers/outbox-device.ts), with the real protocol: a batch of fresh example ids on
 * `devices/{id}/examples` (QoS 1), a row deleted only on the cloud's `stored` receipt (sent after the
 * commit), rows without a receipt re-sent under a new batch id after a receipt timeout. Once every
 * outbox is empty: the example ids stored in PostgreSQL are exactly the ids the devices selected (none
 * lost, none twice), and what the killed replica had in flight was delivered again (counted).
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PROTOCOL_REVISION } from '../../shared/protocol/compat.js';
import { skipWithoutMosquitto, startMosquitto, waitFor, type MosquittoBroker } from '../helpers/broker.js';
import { sharedClusterKeys, spawnCloud, waitForCloudApi, writeReplicaConfig, type CloudChild } from '../helpers/cloud-process.js';
import { registryDialects } from '../helpers/dialects.js';
import { OutboxDevice, outboxDepth as depthOf } from '../helpers/outbox-device.js';

const TOKEN = 'cluster-ingest-token-0123456789';
const DEVICES = ['k1', 'k2', 'k3', 'k4'];
const BATCH = 5;
const SEND_EVERY_MS = 40;
const RECEIPT_TIMEOUT_MS = 2_000;
const pg = registryDialects().find((d) => d.name === 'postgres')!;

describe.skipIf(skipWithoutMosquitto())('3 cloud replicas ingesting through $share: kill -9 of one while devices send', () => {
  const root = mkdtempSync(join(tmpdir(), 'apprentice-cluster-ingest-'));
  const clouds: { id: string; apiUrl: string; proc: CloudChild; child: ChildProcess }[] = [];
  const devices: OutboxDevice[] = [];
  let broker: MosquittoBroker | undefined;
  let resender: NodeJS.Timeout | undefined;

  afterAll(async () => {
    clearInterval(resender);
    for (const d of devices) await d.end().catch(() => undefined);
    for (const c of clouds) if (c.proc.alive()) c.child.kill('SIGKILL');
    await broker?.stop();
    await pg.close();
    rmSync(root, { recursive: true, force: true });
  }, 30_000);

  it('stored ids = selected ids (none lost, none twice) and the killed replica’s in-flight examples are delivered again', async (ctx) => {
    const t0 = Date.now();
    const reg = await pg.open(ctx);
    const url = await pg.url!(ctx);
    const at = new Date().toISOString();
    await reg.q.insert(reg.t.devices).values(DEVICES.map((id) => ({ id, groups: ['lab'], credentialHash: 'x', online: true, lastSeen: at, protocolVersion: PROTOCOL_REVISION, capabilities: ['receipts'] })));
    // (What a daemon's status registers: without the `receipts` capability the cloud sends none.)
    const shared = sharedClusterKeys(root);
    broker = await startMosquitto();

    for (const id of ['r1', 'r2', 'r3']) {
      const { file, apiUrl } = await writeReplicaConfig(root, id, { registryUrl: url, brokerUrl: broker.url, sharedDir: shared, adminToken: TOKEN, mqtt: { protocolVersion: 5 } });
      const proc = spawnCloud(file);
      clouds.push({ id, apiUrl, proc, child: proc.child });
    }
    for (const c of clouds) await waitForCloudApi(c.proc, c.apiUrl, 90_000);
    const startedMs = Date.now() - t0;

    for (const id of DEVICES) devices.push(await OutboxDevice.connect(broker.url, id, { batch: BATCH, sendEveryMs: SEND_EVERY_MS, receiptTimeoutMs: RECEIPT_TIMEOUT_MS }));
    const outboxDepth = () => depthOf(devices);
    const storedIds = async () => (await reg.q.select({ id: reg.t.examples.id }).from(reg.t.examples)).map((r) => r.id);
    for (const d of devices) d.start();
    resender = setInterval(() => devices.forEach((d) => d.resendOverdue()), 250);

    // Ingest is under way before the kill.
    await waitFor(async () => (await storedIds()).length >= 200, 20_000, { intervalMs: 200, message: 'examples stored before the kill' });
    await new Promise((r) => setTimeout(r, 1_000));

    // kill -9 one replica (r2: the leader or a follower, whichever it is) while the devices keep sending.
    // SIGSTOP first, for 600 ms, so it certainly dies with messages in flight: what the broker delivered to
    // it in that window is received (or in its socket) but neither committed nor acknowledged.
    const victim = clouds[1]!;
    const resendsBeforeKill = devices.reduce((n, d) => n + d.resends, 0);
    const victimRole = ((await (await fetch(`${victim.apiUrl}/healthz`)).json()) as { role: string }).role;
    victim.child.kill('SIGSTOP');
    await new Promise((r) => setTimeout(r, 600));
    const inFlightAtKill = devices.map((d) => new Set(d.outbox.keys()));
    victim.child.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 4_000));
    for (const d of devices) d.stop();

    await waitFor(() => outboxDepth() === 0, 30_000, { intervalMs: 200, message: 'every device outbox empty' }).catch(async (e: unknown) => {
      throw new Error(`${(e as Error).message}: depth ${outboxDepth()}, ${(await storedIds()).length} stored of ${devices.reduce((n, d) => n + d.selected.size, 0)} selected, ${devices.reduce((n, d) => n + d.resends, 0)} re-sends; stderr ${clouds.map((c) => `${c.id}: ${c.proc.stderr().slice(-1500)}`).join(' | ')}`);
    });
    clearInterval(resender);

    const selected = new Set(devices.flatMap((d) => [...d.selected]));
    const ids = await storedIds();
    // Every receipt named its examples stored (none refused or deferred).
    expect(devices.flatMap((d) => d.unexpected)).toEqual([]);
    // None twice (the primary key would refuse it anyway: the count is the check), none lost, none extra.
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.length).toBe(selected.size);
    expect(new Set(ids)).toEqual(selected);

    // The killed replica's in-flight examples: waiting for a receipt when it died (the live replicas answer
    // theirs within the receipt timeout), stored only because they were delivered again (re-sent under a new
    // batch id after the timeout, to a live replica).
    const inFlight = inFlightAtKill.flatMap((s) => [...s]);
    const redelivered = devices.flatMap((d) => [...d.resent]);
    const inFlightSet = new Set(inFlight);
    const redeliveredInFlight = [...new Set(redelivered)].filter((x) => inFlightSet.has(x));
    expect(redeliveredInFlight.length).toBeGreaterThan(0);
    for (const x of redelivered) expect(selected.has(x)).toBe(true);
    expect(clouds.filter((c) => c.proc.alive()).map((c) => c.id)).toEqual(['r1', 'r3']);

    const resends = devices.reduce((n, d) => n + d.resends, 0);
    // Sent after the kill and still re-sent: the broker keeps the dead replica's persistent session (MQTT 5
    // session expiry) in the share group and queues its turn of the messages there; the receipt timeout
    // brings those back too.
    const queuedForDead = new Set(redelivered).size - redeliveredInFlight.length;
    console.info(
      `[cluster-ingest-kill] ${selected.size} selected = ${ids.length} stored (0 lost, 0 twice); kill -9 of ${victim.id} (${victimRole}): ${inFlight.length} in flight at the kill, ${redeliveredInFlight.length} of them re-sent and stored (${resends} re-sends of ${new Set(redelivered).size} ids in all, ${resendsBeforeKill} before the kill; ${queuedForDead} ids sent after the kill were re-sent too); replicas up in ${startedMs} ms, test ${Date.now() - t0} ms`,
    );
  }, 120_000);
});
