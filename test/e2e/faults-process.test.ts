/**
 * Fault injection with a daemon as its own process (`apprentice edge --config edge.json`), so it can be
 * killed with SIGKILL: in the middle of a download, then restarted. Ends with the two proofs of
 * faults.test.ts: every device converges to the latest release, and zero hard examples are lost.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { desc } from 'drizzle-orm';
import { releases } from '../../cloud/registry/schema.js';
import { skipWithoutMosquitto, sleep, waitFor } from '../helpers/broker.js';
import { readyz, type DaemonProcess } from '../integration/edge/harness.js';
import { FaultWorld } from './fault-harness.js';

/** The persisted `selected` counter of a running daemon's outbox (WAL: readable from another process). */
function selectedOf(dataDir: string): number {
  const db = new Database(join(dataDir, 'outbox.db'), { readonly: true, fileMustExist: true });
  try {
    const row = db.prepare("SELECT value FROM meta WHERE key = 'selected'").get() as { value: number } | undefined;
    return row?.value ?? 0;
  } finally {
    db.close();
  }
}

async function predictOver(apiUrl: string, n: number, salt: number): Promise<number> {
  let ok = 0;
  for (let i = 0; i < n; i++) {
    const input = Array.from({ length: 784 }, (_, j) => (((salt + i) * 7919 + j * 104729) % 256) / 255);
    const res = await fetch(`${apiUrl}/v1/predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ input }) });
    if (res.ok) ok++;
    await res.arrayBuffer();
  }
  return ok;
}

describe.skipIf(skipWithoutMosquitto())('fault injection on Mosquitto: daemon processes', () => {
  let w: FaultWorld | undefined;
  let k: DaemonProcess | undefined;

  afterAll(async () => {
    await k?.kill('SIGKILL');
    await w?.dispose();
  }, 30_000);

  it('(b) a daemon killed with SIGKILL in the middle of a download, then restarted', async () => {
    w = await FaultWorld.create();
    await w.startDevice('dev-a');
    const kcfg = await w.provision('dev-k');
    k = await w.spawnDevice('dev-k');
    const r1 = w.addRelease({ seed: 1 });
    await w.rollout(r1.seq, { canaryShare: 0.5, soakSeconds: 0 });
    await waitFor(async () => (await readyz(k!.apiUrl!)).release === r1.seq, 30_000, { message: 'dev-k on release 1' });
    await w.waitConverged(r1.seq);
    expect(await predictOver(k.apiUrl!, 10, 1_000)).toBe(10);

    // ~200 KB in 1 KiB chunks: ~200 retained chunks, a download long enough to be killed in.
    const r2 = w.addRelease({ seed: 2, sizes: [784, 64, 10], chunkSize: 1024 });
    const downloads = join(kcfg.dataDir, 'downloads');
    const partial = () => existsSync(downloads) && readdirSync(downloads).some((f) => f.endsWith('.part'));
    await w.rollout(r2.seq, { canaryShare: 0.5, soakSeconds: 0 });
    await waitFor(partial, 30_000, { intervalMs: 1, message: 'dev-k downloading' });
    await k.kill('SIGKILL');
    // The kill landed mid-download: the partial file is still there, the old model still installed.
    expect(partial()).toBe(true);

    k = await w.spawnDevice('dev-k');
    expect((await readyz(k.apiUrl!)).release).toBe(r1.seq);
    expect(await predictOver(k.apiUrl!, 5, 2_000)).toBe(5);
    await waitFor(async () => (await readyz(k!.apiUrl!)).release === r2.seq, 30_000, { message: 'dev-k on release 2' });
    await w.waitConverged(r2.seq);

    // Zero lost: dev-k's persisted selected count plus the in-process device's equals what the cloud stored.
    await waitFor(() => w!.storedIds().length >= selectedOf(kcfg.dataDir) + w!.daemons.get('dev-a')!.snapshot().outbox.selected, 30_000, { message: 'examples stored' });
    await k.kill('SIGTERM');
    const { selected, stored } = await w.waitNoExampleLost(30_000, { extraSelected: selectedOf(kcfg.dataDir) });
    expect(selected).toBe(15);
    expect(stored).toBe(selected);
    const ids = w.storedIds();
    expect(new Set(ids).size).toBe(ids.length);
  }, 120_000);

  it('(f) the cloud process killed with SIGKILL mid-rollout, then restarted: the rollout resumes', async () => {
    const w2 = await FaultWorld.create();
    try {
      for (const id of ['dev-x', 'dev-y', 'dev-z']) await w2.startDevice(id);
      const r1 = w2.addRelease({ seed: 11 });
      await w2.rollout(r1.seq, { canaryShare: 0.3, soakSeconds: 0 });
      await w2.waitConverged(r1.seq);
      await w2.predict('dev-x', 5);
      await w2.waitNoExampleLost();

      await w2.stopCloud();
      const cloud = await w2.spawnCloud();
      const reg = w2.openRegistry();
      let rolloutId: string;
      try {
        const r2 = w2.addRelease({ seed: 12 }, reg);
        // A long soak: the kill lands while the canary has it and the others wait.
        const res = await fetch(`${cloud.apiUrl}/v1/rollouts`, {
          method: 'POST',
          headers: { authorization: `Bearer ${cloud.token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'mnist-student', release: r2.seq, target: 'all', canaryShare: 0.3, soakSeconds: 3, failureThreshold: 0 }),
        });
        expect(res.status, await res.clone().text()).toBe(201);
        rolloutId = ((await res.json()) as { id: string }).id;
        await waitFor(() => [...w2.daemons.values()].some((d) => d.snapshot().running?.release === r2.seq), 20_000, { message: 'canary installed' });
        await w2.predict('dev-y', 5);
        await sleep(300);
        cloud.child.kill('SIGKILL');
        await new Promise((r) => cloud.child.once('exit', r));
        // Mid-rollout: only the canary runs the new release.
        expect([...w2.daemons.values()].filter((d) => d.snapshot().running?.release === r2.seq)).toHaveLength(1);
        // Examples selected while the cloud is dead wait in the broker's persistent session for it.
        await w2.predict('dev-z', 5);
        await sleep(500);
      } finally {
        reg.dispose();
      }
      await w2.startCloud();
      const last = w2.registry.db.select().from(releases).orderBy(desc(releases.seq)).limit(1).get()!;
      await w2.waitConverged(last.seq, 30_000);
      await expect.poll(() => w2.rolloutRow(rolloutId)?.state, { timeout: 20_000 }).toBe('completed');
      const { selected, stored } = await w2.waitNoExampleLost();
      expect(selected).toBe(15);
      expect(stored).toBe(selected);
    } finally {
      await w2.dispose();
    }
  }, 120_000);
});

