/**
 * Issue 9, item 10: `apprentice backup` under ingest load (the real CLI as its own process, while the
 * cloud stores examples), `apprentice restore` into a fresh data dir, and a cloud started on it serves
 * the same fleet: the same devices log in and are listed, and a new release signed by the restored key
 * store rolls out to every device. Then the restore's refusals (bad or corrupt backups, a used data dir).
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { restoreCloud } from '../../cloud/backup/backup.js';
import { UsageError } from '../../shared/cli/errors.js';
import { skipWithoutMosquitto } from '../helpers/broker.js';
import { runCli } from '../helpers/cli.js';
import { FaultWorld, TOKEN } from './fault-harness.js';

describe.skipIf(skipWithoutMosquitto())('backup and restore', () => {
  let w: FaultWorld | undefined;

  afterAll(async () => {
    await w?.dispose();
  }, 60_000);

  it('backs up under ingest load, restores into a fresh data dir, and the restored cloud serves the same fleet', async () => {
    w = await FaultWorld.create();
    for (const id of ['dev-a', 'dev-b']) await w.startDevice(id);
    const r1 = w.addRelease({ seed: 1 });
    await w.rollout(r1.seq, { canaryShare: 0.5, soakSeconds: 0 });
    await w.waitConverged(r1.seq, 60_000);
    expect(await w.predict('dev-a', 10)).toBe(10);
    await w.waitNoExampleLost();
    const before = new Set(w.storedIds());

    // Ingest keeps writing while the backup runs as its own process.
    const out = join(w.dir, 'backup');
    let loading = true;
    const load = (async () => {
      let n = 0;
      while (loading || n < 20) n += (await Promise.all([w!.predict('dev-a', 2), w!.predict('dev-b', 2)])).reduce((a, b) => a + b, 0);
      return n;
    })();
    const backup = await runCli(['backup', '--data-dir', w.cloudCfg.dataDir, '--out', out]);
    loading = false;
    const sent = await load;
    expect(backup.stderr).toBe('');
    expect(backup.code).toBe(0);
    expect(backup.stdout).toMatch(/^backup written to .*: \d+ files, \d+ bytes, registry \d+ pages \(integrity ok\)\n$/);
    expect(statSync(out).mode & 0o777).toBe(0o700);
    const manifest = JSON.parse(readFileSync(join(out, 'backup.json'), 'utf8')) as { files: { path: string }[] };
    const paths = manifest.files.map((f) => f.path);
    expect(paths).toEqual(expect.arrayContaining(['registry.db', 'keys/index.json', `artifacts/${r1.sha256}.onnx`]));
    for (const p of paths.filter((x) => x.startsWith('keys/') && x.endsWith('.pem'))) expect(statSync(join(out, p)).mode & 0o777).toBe(0o600);
    const { selected, stored } = await w.waitNoExampleLost(60_000);
    expect(stored).toBe(selected);
    expect(selected).toBe(10 + sent);
    const original = new Set(w.storedIds());
    await w.stopCloud();

    // Restore into a fresh data dir and start a cloud on it (same broker, config and admin token).
    const fresh = join(w.dir, 'restored');
    const restore = await runCli(['restore', '--from', out, '--data-dir', fresh]);
    expect(restore.stderr).toBe('');
    expect(restore.code).toBe(0);
    await w.startCloud({ dataDir: fresh });
    // A point-in-time copy: everything stored before the backup began, nothing that was never stored.
    const restored = w.storedIds();
    for (const id of before) expect(restored).toContain(id);
    for (const id of restored) expect(original.has(id)).toBe(true);

    // The same fleet: the devices are known, and a release signed by the restored keys reaches them all.
    const res = await fetch(`${w.cloud!.apiUrl}/v1/devices`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(res.status).toBe(200);
    const list = (await res.json()) as { devices: { id: string }[] };
    expect(list.devices.map((d) => d.id).sort()).toEqual(['dev-a', 'dev-b']);
    const r2 = w.addRelease({ seed: 2, dataDir: fresh });
    await w.rollout(r2.seq, { canaryShare: 0.5, soakSeconds: 0 });
    await w.waitConverged(r2.seq, 60_000);
    // And it stores what the devices send next.
    const n = w.storedIds().length;
    expect(await w.predict('dev-b', 5)).toBe(5);
    await waitStored(w, n + 5);
  }, 240_000);

  it('restore refuses a missing, malformed or corrupt backup and a data dir in use, without writing', async () => {
    const dir = join(w!.dir, 'refusals');
    const good = join(w!.dir, 'backup');
    const used = join(w!.dir, 'restored');
    const expectUsage = async (from: string, dataDir: string, msg: RegExp) => {
      const err = await restoreCloud({ from, dataDir }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UsageError);
      expect((err as Error).message).toMatch(msg);
    };
    mkdirSync(join(dir, 'empty'), { recursive: true });
    await expectUsage(join(dir, 'empty'), join(dir, 'd1'), /has no backup\.json/);
    mkdirSync(join(dir, 'notjson'), { recursive: true });
    writeFileSync(join(dir, 'notjson', 'backup.json'), '{"format":');
    await expectUsage(join(dir, 'notjson'), join(dir, 'd2'), /backup\.json is not JSON/);
    mkdirSync(join(dir, 'wrong'), { recursive: true });
    writeFileSync(join(dir, 'wrong', 'backup.json'), JSON.stringify({ format: 'other/1' }));
    await expectUsage(join(dir, 'wrong'), join(dir, 'd3'), /backup\.json: format/);
    await expectUsage(good, used, /already has a registry\.db/);
    // One flipped byte in the backup: refused before anything is written.
    appendFileSync(join(good, 'keys', 'index.json'), ' ');
    await expectUsage(good, join(dir, 'd4'), /keys\/index\.json does not match backup\.json/);
    for (const d of ['d1', 'd2', 'd3', 'd4']) expect(existsSync(join(dir, d))).toBe(false);
    // The CLI: one line, exit 2.
    const cli = await runCli(['restore', '--from', join(dir, 'empty'), '--data-dir', join(dir, 'd5')]);
    expect(cli.code).toBe(2);
    expect(cli.stderr.trim().split('\n')).toHaveLength(1);
    expect(cli.stderr).toMatch(/^error: --from: .* has no backup\.json/);
  }, 120_000);
});

async function waitStored(w: FaultWorld, n: number): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (w.storedIds().length < n) {
    if (Date.now() > deadline) throw new Error(`stored ${w.storedIds().length}, expected ${n}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
