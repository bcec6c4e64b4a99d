/**
 * Issue 15 items 4 and 6 (third proof) with the real cloud: three `apprentice cloud` processes with
 * cluster.enabled on one throwaway PostgreSQL registry and one Mosquitto, a real round (real worker, a tiny
 * random teacher, a small MNIST subset) started through a follower's API and run by the leader.
 *
 * a. kill -9 of the leader while its worker trains: another replica leads under the next epoch, fails the
 *    orphaned round naming the takeover ("leader changed (epoch N→M) during round; retried as <id>"), and
 *    its retry finishes; no release carries the orphan's round id; the orphan's worker is gone.
 * b. SIGSTOP of the (new) leader while its worker trains: the worker keeps going and asks its paused parent
 *    for a release sequence; the last replica takes over and the retry finishes; then SIGCONT: the stale
 *    leader's sequence/signature request is refused by the fence (logged with its action), nothing is stored
 *    or signed for the orphaned round, only the retry's release exists, and the stale leader steps down.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { afterAll, describe, expect, it } from 'vitest';
import { denseModel } from '../fixtures/onnx-models.js';
import { skipWithoutMosquitto, startMosquitto, waitFor, type MosquittoBroker } from '../helpers/broker.js';
import { childPids, pidAlive, sharedClusterKeys, spawnCloud, waitForCloudApi, writeReplicaConfig, type CloudChild } from '../helpers/cloud-process.js';
import { registryDialects } from '../helpers/dialects.js';

const TOKEN = 'cluster-round-admin-token-0123456789';
const MODEL = 'takeover-digits';
const TAKEOVER_BOUND_MS = 15_000;
const pg = registryDialects().find((d) => d.name === 'postgres')!;

interface Replica {
  id: string;
  apiUrl: string;
  proc: CloudChild;
}

interface Health {
  role: string;
  epoch: number | null;
}

async function health(r: Replica): Promise<Health | undefined> {
  const res = await fetch(`${r.apiUrl}/healthz`).catch(() => undefined);
  return res?.ok ? ((await res.json()) as Health) : undefined;
}

describe.skipIf(skipWithoutMosquitto())('a round across a leader takeover (3 cloud processes, PostgreSQL, Mosquitto)', () => {
  const root = mkdtempSync(join(tmpdir(), 'apprentice-cluster-round-'));
  const replicas: Replica[] = [];
  const stopped = new Set<number>();
  let broker: MosquittoBroker | undefined;

  afterAll(async () => {
    for (const r of replicas) {
      const pid = r.proc.child.pid!;
      if (stopped.has(pid)) process.kill(pid, 'SIGCONT');
      for (const w of childPids(pid, 'worker')) process.kill(w, 'SIGKILL');
      if (r.proc.alive()) r.proc.child.kill('SIGKILL');
    }
    await broker?.stop();
    await pg.close();
    rmSync(root, { recursive: true, force: true });
  }, 30_000);

  it('kill -9 and SIGSTOP of the leader mid-round: the orphan fails naming the takeover, its retry is released, the stale leader signs and stores nothing', async (ctx) => {
    const reg = await pg.open(ctx);
    const url = await pg.url!(ctx);
    const teacherFile = join(root, 'teacher.onnx');
    writeFileSync(teacherFile, denseModel({ sizes: [784, 32, 10], seed: 3 }).bytes);
    await reg.q.insert(reg.t.models).values({
      name: MODEL,
      inputSpec: { shape: [784], dtype: 'float32', scaling: { scale: 1 / 255, offset: 0 }, raw: 'uint8' },
      labels: Array.from({ length: 10 }, (_, i) => `digit_${i}`),
      teacher: { files: [teacherFile], outputKind: 'logits' },
      studentSpec: 'mlp:16',
      // A few seconds of training (long enough to be killed or paused in); no parent tolerance, so any accuracy passes the gate.
      distillSettings: { baseData: 'mnist:train', baseLimit: 800, holdout: 'mnist:test', holdoutLimit: 100, epochs: 6, batchSize: 64, hardExampleShare: 0.5, tolerance: 1 },
    });
    const shared = sharedClusterKeys(root);
    broker = await startMosquitto();
    for (const id of ['r1', 'r2', 'r3']) {
      const { file, apiUrl } = await writeReplicaConfig(root, id, { registryUrl: url, brokerUrl: broker.url, sharedDir: shared, adminToken: TOKEN });
      replicas.push({ id, apiUrl, proc: spawnCloud(file) });
    }
    for (const r of replicas) await waitForCloudApi(r.proc, r.apiUrl, 90_000);

    const leaderNow = async (among: Replica[]): Promise<{ leader: Replica; epoch: number }> => {
      let found: { leader: Replica; epoch: number } | undefined;
      await waitFor(async () => {
        for (const r of among) {
          const h = await health(r);
          if (h?.role === 'leader' && h.epoch) return Boolean((found = { leader: r, epoch: h.epoch }));
        }
        return false;
      }, TAKEOVER_BOUND_MS, { intervalMs: 100, message: 'a leader by /healthz' });
      return found!;
    };
    const round = async (id: string) => (await reg.q.select().from(reg.t.rounds).where(eq(reg.t.rounds.id, id)))[0];
    const releasesOf = async (roundId: string) => reg.q.select({ seq: reg.t.releases.seq }).from(reg.t.releases).where(eq(reg.t.releases.roundId, roundId));
    const start = async (via: Replica): Promise<string> => {
      const res = await fetch(`${via.apiUrl}/v1/models/${MODEL}/rounds`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: '{}' });
      const body = (await res.json()) as { id: string };
      expect(res.status, JSON.stringify(body)).toBe(202);
      return body.id;
    };
    /** Waits until `id` trains on `leader`'s worker; returns the worker's pid. */
    const training = async (leader: Replica, id: string): Promise<number> => {
      let pid: number | undefined;
      await waitFor(async () => {
        const r = await round(id);
        if (r?.state !== 'running' || (r.progress as { phase?: string } | null)?.phase !== 'train') return false;
        pid = childPids(leader.proc.child.pid!, 'worker')[0];
        return pid !== undefined;
      }, 90_000, { intervalMs: 100, message: `round ${id} training` });
      return pid!;
    };
    /** The orphan `id` failed naming the takeover; its retry finished. Returns the retry's id. */
    const retried = async (id: string, from: number, to: number): Promise<string> => {
      await expect.poll(async () => (await round(id))?.error ?? '', { timeout: 30_000, interval: 200 }).toMatch(/retried as /);
      const orphan = (await round(id))!;
      expect(orphan.state).toBe('failed');
      expect(orphan.error).toMatch(new RegExp(`^leader changed \\(epoch ${from}→${to}\\) during round; retried as [0-9a-f-]{36}$`));
      const retryId = orphan.error!.replace(/^.* retried as /, '');
      await expect.poll(async () => (await round(retryId))?.state, { timeout: 90_000, interval: 250 }).toMatch(/^(released|rejected)$/);
      expect(await round(retryId)).toMatchObject({ trigger: 'retry', attempts: 2, model: MODEL });
      return retryId;
    };

    // a. kill -9 of the leader while its worker trains.
    const t0 = Date.now();
    const marks: string[] = [];
    const mark = (what: string) => marks.push(`${what} +${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const { leader: l1, epoch: e1 } = await leaderNow(replicas);
    const r1 = await start(replicas.find((r) => r !== l1)!);
    const w1 = await training(l1, r1);
    mark('a: training');
    l1.proc.child.kill('SIGKILL');
    const rest = replicas.filter((r) => r !== l1);
    const { leader: l2, epoch: e2 } = await leaderNow(rest);
    expect(e2).toBe(e1 + 1);
    mark('a: new leader');
    const retry1 = await retried(r1, e1, e2);
    mark('a: retry finished');
    expect(await releasesOf(r1)).toEqual([]);
    // The orphan's worker saw its parent go (IPC disconnect) and exited.
    await waitFor(() => !pidAlive(w1), 30_000, { message: 'the killed leader\'s round worker to exit' });
    mark('a: orphan worker gone');

    // b. SIGSTOP of the new leader while its worker trains; the worker is left running.
    const r2 = await start(l2);
    const w2 = await training(l2, r2);
    mark('b: training');
    const l2pid = l2.proc.child.pid!;
    process.kill(l2pid, 'SIGSTOP');
    stopped.add(l2pid);
    const last = rest.find((r) => r !== l2)!;
    const { leader: l3, epoch: e3 } = await leaderNow([last]);
    expect(l3).toBe(last);
    expect(e3).toBe(e2 + 1);
    mark('b: new leader');
    const retry2 = await retried(r2, e2, e3);
    mark('b: retry finished');
    expect(pidAlive(w2)).toBe(true); // the paused leader's worker kept running (waiting on its parent)
    // The stale leader resumes: its worker's sequence/signature request is refused by the fence, and it steps down.
    process.kill(l2pid, 'SIGCONT');
    stopped.delete(l2pid);
    await waitFor(() => /round\.(sequence|sign) refused: leader epoch \d+ is stale/.test(l2.proc.stderr()), 30_000, { message: "the stale leader's round sign refused" }).catch((err: Error) => {
      throw new Error(`${err.message}; its stderr: ${l2.proc.stderr().slice(-2000)}`);
    });
    mark('b: stale sign refused');
    await expect.poll(async () => (await health(l2))?.role, { timeout: 15_000, interval: 200 }).toBe('follower');
    await waitFor(() => !pidAlive(w2), 30_000, { message: 'the stale leader\'s round worker to exit' });
    const metrics = await (await fetch(`${l2.apiUrl}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).text();
    expect(Number(/apprentice_cluster_fence_refusals_total\{kind="write"\} (\d+)/.exec(metrics)?.[1] ?? 0)).toBeGreaterThan(0);
    expect(await round(r2)).toMatchObject({ state: 'failed' }); // nothing the stale leader wrote after the takeover landed

    // Only the retries' releases exist; none for an orphaned round.
    expect(await releasesOf(r2)).toEqual([]);
    const rows = await reg.q.select({ roundId: reg.t.releases.roundId }).from(reg.t.releases);
    const releasedRetries: string[] = [];
    for (const id of [retry1, retry2]) if ((await round(id))?.state === 'released') releasedRetries.push(id);
    expect(rows.map((r) => r.roundId).sort()).toEqual(releasedRetries.sort());
    mark('done');
    console.info(`[cluster-round-takeover] epochs ${e1}→${e2} (kill -9), ${e2}→${e3} (SIGSTOP); retries ${retry1}, ${retry2} (${releasedRetries.length} released); ${marks.join(', ')}`);
  }, 300_000);
});
