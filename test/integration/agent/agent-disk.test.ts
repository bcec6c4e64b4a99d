/**
 * Issue 14: an agent unpack on a real full disk (a size-limited tmpfs) and on a data dir the kernel
 * switches to read-only in the middle of the unpack (a loop-mounted ext4 with errors=remount-ro, as an
 * SD card with I/O errors gets). The real AgentInstaller downloads over HTTP, verifies and unpacks; it
 * must refuse cleanly: `current` still names the complete running version, no restart is asked for,
 * the failure is reported as `agent_rejected` with its reason and counted, and a `.partial` directory
 * the read-only disk kept is swept at the next start. Needs root and mount(8) (test/helpers/mounts.ts);
 * skipped with the reason otherwise.
 */
import { existsSync, mkdirSync, readdirSync, readlinkSync, rmSync, symlinkSync, watch, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry as PromRegistry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentInstaller } from '../../../edge/agent/index.js';
import { generateSigningKey, toTrustedKey } from '../../../shared/manifest/index.js';
import type { DeviceEvent } from '../../../shared/protocol/index.js';
import { makeAgentRelease, type BundleFile } from '../../fixtures/agent-release.js';
import { startArtifactServer, type ArtifactServer } from '../../helpers/artifact-server.js';
import { Ext4Loop, mountSupport, mountTmpfs, probeWrite, unmountQuietly } from '../../helpers/mounts.js';

const key = generateSigningKey();
const noMounts = mountSupport(join(tmpdir(), `apprentice-agent-mount-probe-${process.pid}`));
if (noMounts) console.warn(`skipping the agent unpack disk drills: ${noMounts}`);

/** The running version 1.0.0, complete, with `current` naming it (as after an earlier agent update). */
function installRunning(root: string): void {
  mkdirSync(join(root, '1.0.0/bin'), { recursive: true });
  writeFileSync(join(root, '1.0.0/package.json'), '{"version":"1.0.0"}\n');
  writeFileSync(join(root, '1.0.0/bin/apprentice-edge.js'), '// 1.0.0\n');
  rmSync(join(root, 'current'), { force: true });
  symlinkSync('1.0.0', join(root, 'current'));
}

async function installer(root: string, metrics: PromRegistry) {
  const events: DeviceEvent[] = [];
  let restarts = 0;
  const inst = await AgentInstaller.create({
    deviceId: 'dev-disk',
    root,
    running: { version: '1.0.0', dir: join(root, '1.0.0') },
    platform: `${process.platform}-${process.arch}`,
    trustedKeys: () => [toTrustedKey(key)],
    now: () => new Date(),
    cloudProtocol: () => 2,
    emit: (ev) => void events.push(ev),
    requestRestart: () => restarts++,
    httpIdleTimeoutMs: 5_000,
    metrics,
  });
  return { inst, events, restarts: () => restarts };
}

const rejectedCount = async (metrics: PromRegistry, reason: string): Promise<number> =>
  ((await metrics.getSingleMetric('apprentice_edge_agent_rejected_total')?.get())?.values ?? []).find((v) => v.labels.reason === reason)?.value ?? 0;

describe('agent installer start', () => {
  it('the next start sweeps a .partial directory and a temp link a failed unpack or a crash left', async () => {
    const root = join(tmpdir(), `apprentice-agent-sweep-${process.pid}`);
    try {
      installRunning(root);
      mkdirSync(join(root, '2.0.0.partial/bin'), { recursive: true });
      writeFileSync(join(root, '2.0.0.partial/bin/apprentice-edge.js'), '// half');
      symlinkSync('2.0.0', join(root, '.current.tmp.99999'));
      expect(readdirSync(root)).toEqual(expect.arrayContaining(['2.0.0.partial', '.current.tmp.99999']));
      await installer(root, new PromRegistry());
      expect(readdirSync(root).sort()).toEqual(['1.0.0', 'current']);
      expect(readlinkSync(join(root, 'current'))).toBe('1.0.0');
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe.skipIf(noMounts !== undefined)('agent unpack on a full and a read-only disk', { timeout: 60_000 }, () => {
  const work = join(tmpdir(), `apprentice-agent-disk-${process.pid}`);
  let server: ArtifactServer;

  beforeAll(async () => {
    mkdirSync(work, { recursive: true });
    server = await startArtifactServer();
  });
  afterAll(async () => {
    await server?.close();
    rmSync(work, { recursive: true, force: true });
  });

  function release(version: string, agentSeq: number, files: BundleFile[]) {
    const url = `/agent-${version}-${agentSeq}.tgz`;
    const rel = makeAgentRelease(key, { version, agentSeq, files, url: server.url(url), chunkSize: 64 * 1024 });
    server.serve(url, rel.tarball);
    return rel;
  }

  it('disk full: the unpack fails with no_space, the partial dir is removed, current stays on 1.0.0, reported and counted', async () => {
    const root = join(work, 'full');
    // 3 MiB: the download (a few KB: the zeros compress) fits, the 8 MiB file it unpacks to does not.
    mountTmpfs(root, 3 * 1024 * 1024);
    try {
      installRunning(root);
      const metrics = new PromRegistry();
      const { inst, events, restarts } = await installer(root, metrics);
      const rel = release('2.0.0', 2, [
        { path: 'package.json', data: '{"version":"2.0.0"}\n' },
        { path: 'bin/apprentice-edge.js', data: '// 2.0.0\n', mode: 0o755 },
        { path: 'dist/big.bin', data: Buffer.alloc(8 * 1024 * 1024) },
      ]);
      expect(rel.tarball.length).toBeLessThan(64 * 1024);
      const outcome = await inst.handle(JSON.stringify(rel.signed));
      expect(outcome).toMatchObject({ status: 'rejected', reason: 'no_space' });
      expect(events.map((e) => [e.type, e.agent?.reason, e.agent?.version, e.agent?.running])).toEqual([['agent_rejected', 'no_space', '2.0.0', '1.0.0']]);
      expect(events[0]!.detail).toMatch(/unpacking 2\.0\.0: .*ENOSPC/);
      expect(await rejectedCount(metrics, 'no_space')).toBe(1);
      // Nothing half-done: no partial or version dir, the download forgotten, `current` on the complete 1.0.0.
      expect(readdirSync(root).filter((n) => n.startsWith('2.0.0'))).toEqual([]);
      expect(readlinkSync(join(root, 'current'))).toBe('1.0.0');
      expect(existsSync(join(root, '1.0.0/bin/apprentice-edge.js'))).toBe(true);
      expect(restarts()).toBe(0);
      // The space the unpack took is given back: the disk takes writes again.
      expect(probeWrite(root)).toBe('ok');
    } finally {
      unmountQuietly(root);
    }
  });

  it('read-only mid-unpack: refused as unpack_failed (EROFS) and counted, current stays, nothing of 2.0.0 is left after the restart', async () => {
    const loop = new Ext4Loop(join(work, 'ro.img'), join(work, 'ro'), 32);
    loop.create();
    try {
      const root = loop.dir;
      installRunning(root);
      const metrics = new PromRegistry();
      const { inst, events, restarts } = await installer(root, metrics);
      // Many files: the unpack takes long enough for the file system to go read-only while it runs.
      const files: BundleFile[] = [{ path: 'package.json', data: '{"version":"2.0.0"}\n' }, { path: 'bin/apprentice-edge.js', data: '// 2.0.0\n', mode: 0o755 }];
      for (let i = 0; i < 1500; i++) files.push({ path: `dist/m${i % 30}/f${i}.js`, data: `export const v = ${i};\n`.repeat(40) });
      const rel = release('2.0.0', 3, files);
      // The kernel's emergency read-only as soon as the unpack's .partial directory appears.
      const watcher = watch(root, (_e, name) => {
        if (String(name) === '2.0.0.partial' && !loop.readOnly()) loop.goReadOnly();
      });
      let outcome;
      try {
        outcome = await inst.handle(JSON.stringify(rel.signed));
      } finally {
        watcher.close();
      }
      expect(loop.readOnly()).toBe(true);
      expect(outcome).toMatchObject({ status: 'rejected', reason: 'unpack_failed' });
      expect(events.map((e) => [e.type, e.agent?.reason, e.agent?.version])).toEqual([['agent_rejected', 'unpack_failed', '2.0.0']]);
      expect(events[0]!.detail).toMatch(/EROFS|read-only/i);
      // The read-only disk kept the .partial directory (its removal failed too), and the report says so.
      expect(events[0]!.detail).toMatch(/2\.0\.0\.partial not removed \(EROFS\), swept at the next start/);
      expect(readdirSync(root)).toContain('2.0.0.partial');
      expect(await rejectedCount(metrics, 'unpack_failed')).toBe(1);
      expect(readlinkSync(join(root, 'current'))).toBe('1.0.0');
      expect(existsSync(join(root, '2.0.0'))).toBe(false);
      expect(restarts()).toBe(0);
      // A host reboots after an emergency read-only (fsck, mount); the daemon starts again.
      // (ext4's journal was aborted, so after fsck the half-created directory may already be gone; the
      // sweep itself is shown on a plain disk below.)
      loop.unmount();
      loop.mount();
      await installer(root, new PromRegistry());
      expect(readdirSync(root).filter((n) => n.startsWith('2.0.0'))).toEqual([]);
      expect(readlinkSync(join(root, 'current'))).toBe('1.0.0');
      expect(existsSync(join(root, '1.0.0/bin/apprentice-edge.js'))).toBe(true);
    } finally {
      loop.dispose();
    }
  });
});
