import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { agentCommand } from '../../../cloud/agents/cli.js';
import { checkNatives, pruneForPlatform } from '../../../cloud/agents/build.js';
import { listBundleFiles } from '../../../cloud/agents/pack.js';
import { agentReleases } from '../../../cloud/registry/schema.js';
import { UsageError } from '../../../shared/cli/errors.js';
import { rawAgentTar, tinyBundle } from '../../fixtures/agent-tar.js';
import { captureProgram, type CapturedRun } from '../../helpers/capture-program.js';
import { harness, TOKEN, type Harness } from '../cloud-api/helpers.js';

/** A minimal ELF header with e_machine `machine` (62 x86-64, 183 aarch64). */
function elf(machine: number): Buffer {
  const b = Buffer.alloc(64);
  b.writeUInt32BE(0x7f454c46, 0);
  b[4] = 2;
  b[5] = 1;
  b.writeUInt16LE(machine, 18);
  return b;
}

/** A fake staged node_modules: better-sqlite3 and onnxruntime for the given machines. */
function fakeModules(dir: string, sqliteMachine: number): string {
  const nm = join(dir, 'node_modules');
  const w = (p: string, data: string | Buffer) => {
    mkdirSync(join(nm, p, '..'), { recursive: true });
    writeFileSync(join(nm, p), data);
  };
  w('better-sqlite3/build/Release/better_sqlite3.node', elf(sqliteMachine));
  w('better-sqlite3/build/Release/obj/x.o', 'x');
  w('better-sqlite3/src/better_sqlite3.cpp', 'x');
  w('onnxruntime-node/bin/napi-v6/linux/x64/onnxruntime_binding.node', elf(62));
  w('onnxruntime-node/bin/napi-v6/linux/arm64/onnxruntime_binding.node', elf(183));
  w('onnxruntime-node/bin/napi-v6/darwin/arm64/onnxruntime_binding.node', 'mach-o');
  w('dep/index.js', 'export default 1;');
  w('dep/index.d.ts', 'export {};');
  w('dep/README.md', '# dep');
  w('@types/node/index.d.ts', '');
  return nm;
}

describe('agent build: prune and native checks', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'agent-build-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('prunes what no linux-x64 device runs and accepts its x86-64 binaries', async () => {
    const nm = fakeModules(dir, 62);
    await pruneForPlatform(nm, 'linux-x64');
    expect(await listBundleFiles(nm)).toEqual(['better-sqlite3/build/Release/better_sqlite3.node', 'dep/index.js', 'onnxruntime-node/bin/napi-v6/linux/x64/onnxruntime_binding.node']);
    expect(await checkNatives(nm, 'linux-x64')).toBe(2);
  });

  it('refuses linux-arm64 when better-sqlite3 is x86-64 (this machine), naming the file', async () => {
    const nm = fakeModules(dir, 62);
    await pruneForPlatform(nm, 'linux-arm64');
    const err = await checkNatives(nm, 'linux-arm64').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toMatch(/--platform linux-arm64: .*built for another machine: better-sqlite3\/build\/Release\/better_sqlite3.node \(x86-64\)/);
  });

  it('refuses a platform whose onnxruntime binary is missing', async () => {
    const nm = fakeModules(dir, 183);
    rmSync(join(nm, 'onnxruntime-node/bin/napi-v6/linux/arm64'), { recursive: true });
    await pruneForPlatform(nm, 'linux-arm64');
    await expect(checkNatives(nm, 'linux-arm64')).rejects.toThrow(/missing: onnxruntime-node/);
  });
});

describe('agent pack', () => {
  it('packs the same directory to the same bytes (sorted entries, fixed times, normalized modes), whatever the umask left', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'agent-pack-'));
    try {
      const a = await tinyBundle(join(dir, 'a') + '/..', '0.2.0');
      const root = join(dir, 'bundle-0.2.0-linux-x64');
      chmodSync(join(root, 'dist/bin/edge.js'), 0o600);
      await new Promise((r) => setTimeout(r, 20)); // a later mtime
      const b = await tinyBundle(dir, '0.2.0');
      expect(b.equals(a)).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** `apprentice agent ...` in-process, through the real API app. */
describe('apprentice agent push / list (CLI over the API)', () => {
  let h: Harness;
  let fetchImpl: typeof fetch;
  beforeEach(() => {
    h = harness();
    fetchImpl = ((input: string | URL | Request, init?: RequestInit) => Promise.resolve(h.app.request(String(input), init))) as typeof fetch;
  });
  afterEach(() => h.close());

  const run = (...argv: string[]): Promise<CapturedRun> => captureProgram(new Command('apprentice').addCommand(agentCommand({ fetchImpl, env: {} })), ['agent', ...argv]);
  const api = ['--cloud', 'http://cloud.test', '--token', TOKEN];

  it('pushes a tarball (streamed), then lists it', async () => {
    const file = join(h.dir, 'a.tar.gz');
    writeFileSync(file, await tinyBundle(h.dir, '0.2.0'));
    const pushed = await run('push', file, '--platform', 'linux-x64', ...api);
    expect(pushed, pushed.stderr).toMatchObject({ code: 0 });
    expect(pushed.stdout).toMatch(/^agent 0.2.0 for linux-x64: agentSeq 1, 4 files, \d+ bytes, sha256 [0-9a-f]{64}\n/);
    expect(h.registry.db.select().from(agentReleases).all()).toHaveLength(1);
    const list = await run('list', ...api);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/^0\.2\.0\s+linux-x64\s+agentSeq 1 /);
  });

  it('exits 2 with the API refusal for an unsafe tarball, a mismatching --version, a missing file and a bad --platform', async () => {
    const bad = join(h.dir, 'bad.tar.gz');
    writeFileSync(bad, rawAgentTar([{ path: '../evil', body: 'x' }]));
    const r1 = await run('push', bad, ...api);
    expect(r1.code).toBe(2);
    expect(r1.stderr).toMatch(/HTTP 422 .*unsafe_entry: \.\.\/evil/);
    const good = join(h.dir, 'good.tar.gz');
    writeFileSync(good, await tinyBundle(h.dir, '0.2.0'));
    const r2 = await run('push', good, '--version', '0.3.0', ...api);
    expect(r2.code).toBe(2);
    expect(r2.stderr).toMatch(/agent_mismatch: the archive's agent.json says version 0.2.0, the push says 0.3.0/);
    const r3 = await run('push', join(h.dir, 'nope.tar.gz'), ...api);
    expect(r3).toMatchObject({ code: 2 });
    expect(r3.stderr).toMatch(/nope.tar.gz: cannot read \(ENOENT\)/);
    const r4 = await run('list', '--platform', 'mips', ...api);
    expect(r4.code).toBe(2);
    expect(r4.stderr).toMatch(/--platform: expected linux-x64 or linux-arm64, got "mips"/);
  });

  it('push --upgrade-from signs the listed versions; a malformed list exits 2 before anything is sent', async () => {
    const file = join(h.dir, 'a.tar.gz');
    writeFileSync(file, await tinyBundle(h.dir, '0.2.0'));
    const pushed = await run('push', file, '--upgrade-from', '0.1.0, 0.1.1,0.1.0', '--json', ...api);
    expect(pushed, pushed.stderr).toMatchObject({ code: 0 });
    expect(JSON.parse(pushed.stdout).upgradeFrom).toEqual(['0.1.0', '0.1.1']);
    const row = h.registry.db.select().from(agentReleases).get()!;
    expect((row.manifest as { upgradeFrom: string[] }).upgradeFrom).toEqual(['0.1.0', '0.1.1']);
    for (const [arg, msg] of [
      ['0.1.0,,0.1.1', /--upgrade-from: upgradeFrom: an empty entry/],
      ['*,0.1.0', /--upgrade-from: upgradeFrom: \* means any version; give \* alone/],
      ['0.1.0,latest', /--upgrade-from: upgradeFrom: not a version like 0.1.0: "latest"/],
    ] as const) {
      const r = await run('push', file, '--upgrade-from', arg, ...api);
      expect(r.code, arg).toBe(2);
      expect(r.stderr, arg).toMatch(msg);
    }
    expect(h.registry.db.select().from(agentReleases).all()).toHaveLength(1);
  });

  it('build refuses an unbuilt checkout with exit 2, and every subcommand has --help', async () => {
    const src = join(h.dir, 'checkout');
    mkdirSync(src);
    writeFileSync(join(src, 'package.json'), '{"version":"0.2.0"}');
    chmodSync(src, 0o755);
    const r = await run('build', '--source', src, '--platform', 'linux-x64', '--out', join(h.dir, 'x.tar.gz'));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/is not built \(no dist\/bin\/edge.js\): run `npm run build` first/);
    for (const sub of ['build', 'push', 'list', 'rollback']) {
      const help = await run(sub, '--help');
      expect(help.code, sub).toBe(0);
      expect(help.stdout, sub).toMatch(/Usage: apprentice agent/);
    }
  });
});
