/**
 * Issue 14: `apprentice agent build` on this checkout (needs `npm run build`, like install-lean): the real
 * lean bundle packed for linux-x64 passes the cloud's own archive checks, lists what the daemon runs,
 * and holds only this platform's native code. (linux-arm64's refusal is covered with fake ELF files in
 * test/unit/agents/agent-cli.test.ts; it cannot be built here.)
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inspectAgentArchive, type AgentArchiveInfo } from '../../../cloud/agents/archive.js';
import { hostPlatform } from '../../../cloud/agents/build.js';
import { REPO_ROOT, runCli, type CliResult } from '../../helpers/cli.js';

const platform = hostPlatform();
if (platform !== 'linux-x64') console.warn(`[agent-build] skipping: this machine builds ${platform ?? 'no agent platform'}, the test checks a linux-x64 bundle`);

describe.skipIf(platform !== 'linux-x64')('apprentice agent build (this checkout, linux-x64)', () => {
  let work: string;
  let out: string;
  let r: CliResult;
  let info: AgentArchiveInfo;

  beforeAll(async () => {
    if (!existsSync(path.join(REPO_ROOT, 'dist/bin/edge.js'))) throw new Error('run `npm run build` first: agent build stages dist/');
    work = mkdtempSync(path.join(tmpdir(), 'apprentice-agent-build-'));
    out = path.join(work, 'edge.tar.gz');
    r = await runCli(['agent', 'build', '--version', '0.2.0-test', '--platform', 'linux-x64', '--out', out, '--json'], { timeoutMs: 240_000 });
    if (r.code === 0) info = await inspectAgentArchive(out);
  }, 300_000);
  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('exits 0 and writes a tar.gz the cloud accepts, with agent.json naming the version and platform', () => {
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ out, version: '0.2.0-test', platform: 'linux-x64' });
    expect(info).toMatchObject({ version: '0.2.0-test', platform: 'linux-x64' });
    expect(r.stderr).toMatch(/agent build: stage/);
  });

  it('lists the daemon, its package.json and its native addons, and nothing of other platforms or the cloud', () => {
    const paths = new Set(info.files.map((f) => f.path));
    for (const p of ['agent.json', 'package.json', 'bin/apprentice-edge.js', 'dist/bin/edge.js', 'node_modules/better-sqlite3/build/Release/better_sqlite3.node', 'node_modules/onnxruntime-node/bin/napi-v6/linux/x64/onnxruntime_binding.node']) expect(paths.has(p), p).toBe(true);
    const bad = [...paths].filter((p) => /onnxruntime-node\/bin\/napi-v6\/(?!linux\/x64\/)/.test(p) || /\.(ts|map|md)$/.test(p) || p.startsWith('dist/cloud/') || p.startsWith('node_modules/.bin/'));
    expect(bad).toEqual([]);
    expect(info.files.every((f) => f.mode === 0o644 || f.mode === 0o755)).toBe(true);
  });
});
