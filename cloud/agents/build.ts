import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { promisify } from 'node:util';
import { UsageError } from '../../shared/cli/errors.js';
import type { AgentPlatform } from '../../shared/protocol/agent.js';
import { packAgentBundle } from './pack.js';

const run = promisify(execFile);

/** ELF e_machine of each platform's native code (the ELF spec: EM_X86_64 = 62, EM_AARCH64 = 183). */
const ELF_MACHINE: Record<AgentPlatform, number> = { 'linux-x64': 62, 'linux-arm64': 183 };
const ORT_ARCH: Record<AgentPlatform, string> = { 'linux-x64': 'x64', 'linux-arm64': 'arm64' };
const ELF_NAMES: Record<number, string> = { 62: 'x86-64', 183: 'aarch64', 40: 'arm', 3: 'x86' };

/** The platform of this machine, or undefined when it is not one agents are built for. */
export function hostPlatform(): AgentPlatform | undefined {
  if (process.platform !== 'linux') return undefined;
  return process.arch === 'x64' ? 'linux-x64' : process.arch === 'arm64' ? 'linux-arm64' : undefined;
}

export interface BuildStep {
  step: 'stage' | 'prune' | 'check' | 'pack';
  detail: string;
}

export interface BuildAgentOptions {
  /** A built checkout (dist/bin/edge.js, node_modules, package-lock.json). */
  source: string;
  out: string;
  platform: AgentPlatform;
  /** Default: the checkout's package.json version. */
  version?: string;
  onStep?: (s: BuildStep) => void;
  onFile?: (n: number, total: number) => void;
}

async function* walk(dir: string): AsyncGenerator<string> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* walk(p);
    else if (e.isFile() || e.isSymbolicLink()) yield p;
  }
}

/** The ELF machine of a file, or undefined for a non-ELF file. */
async function elfMachine(path: string): Promise<number | undefined> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(20);
    const { bytesRead } = await fh.read(b, 0, 20, 0);
    if (bytesRead < 20 || b.readUInt32BE(0) !== 0x7f454c46) return undefined;
    return b.readUInt16LE(18);
  } finally {
    await fh.close();
  }
}

/**
 * Removes what no device of `platform` runs, as deploy/install-edge.sh's prune_node_modules does on
 * the device (issue 9): other platforms' onnxruntime binaries, better-sqlite3's sources and build
 * intermediates, @types, TypeScript sources, source maps, Markdown. Symlinks (node_modules/.bin) go
 * too: the signed listing covers regular files only. Kept in step with install-edge.sh by hand: that
 * one is bash run on a device, this one runs where bundles are built.
 */
export async function pruneForPlatform(nm: string, platform: AgentPlatform): Promise<void> {
  const ort = join(nm, 'onnxruntime-node/bin/napi-v6');
  if (existsSync(ort)) {
    for (const os of await readdir(ort)) {
      for (const arch of await readdir(join(ort, os))) if (!(os === 'linux' && arch === ORT_ARCH[platform])) await rm(join(ort, os, arch), { recursive: true, force: true });
      if (!(await readdir(join(ort, os))).length) await rm(join(ort, os), { recursive: true, force: true });
    }
  }
  const sq = join(nm, 'better-sqlite3');
  if (existsSync(join(sq, 'build/Release/better_sqlite3.node'))) {
    for (const d of ['deps', 'src']) await rm(join(sq, d), { recursive: true, force: true });
    for (const d of await readdir(join(sq, 'build'))) if (d !== 'Release') await rm(join(sq, 'build', d), { recursive: true, force: true });
    for (const f of await readdir(join(sq, 'build/Release'))) if (f !== 'better_sqlite3.node') await rm(join(sq, 'build/Release', f), { recursive: true, force: true });
  }
  await rm(join(nm, '@types'), { recursive: true, force: true });
  await rm(join(nm, '.bin'), { recursive: true, force: true });
  for await (const f of walk(nm)) {
    const st = await lstat(f);
    if (st.isSymbolicLink() || /\.(ts|mts|cts|map|md)$/.test(f)) await rm(f, { force: true });
  }
}

/**
 * Refuses (UsageError, exit 2) a bundle whose native code is not for `platform`: every ELF file under
 * node_modules must be for its machine, and better-sqlite3 and onnxruntime must have their binary for
 * it. A checkout's node_modules holds the binaries of the machine that ran `npm install` (onnxruntime
 * ships arm64 too, better-sqlite3 and sharp do not), so linux-arm64 can be built only on an arm64
 * machine, or after cross-compiling better-sqlite3.
 */
export async function checkNatives(nm: string, platform: AgentPlatform): Promise<number> {
  const want = ELF_MACHINE[platform];
  const wrong: string[] = [];
  let natives = 0;
  for await (const f of walk(nm)) {
    if (!/\.node$|\.so(\.\d+)*$/.test(f)) continue;
    const m = await elfMachine(f);
    if (m === undefined) continue;
    natives++;
    if (m !== want) wrong.push(`${relative(nm, f)} (${ELF_NAMES[m] ?? `machine ${m}`})`);
  }
  const missing = [
    ['better-sqlite3/build/Release/better_sqlite3.node', 'better-sqlite3'],
    [`onnxruntime-node/bin/napi-v6/linux/${ORT_ARCH[platform]}`, 'onnxruntime-node'],
  ].filter(([p]) => !existsSync(join(nm, p!))).map(([p, pkg]) => `${pkg} (${p})`);
  if (wrong.length || missing.length) {
    const what = [...(missing.length ? [`missing: ${missing.join(', ')}`] : []), ...(wrong.length ? [`built for another machine: ${wrong.slice(0, 5).join(', ')}${wrong.length > 5 ? ` and ${wrong.length - 5} more` : ''}`] : [])].join('; ');
    throw new UsageError(`--platform ${platform}: the checkout's node_modules has no native binaries for it (${what}). Build on a ${platform} machine (or cross-compile better-sqlite3 for it); this machine builds ${hostPlatform() ?? 'no agent platform'}`);
  }
  return natives;
}

/**
 * `apprentice agent build`: stages the lean edge bundle (deploy/edge-package.mjs --copy-node-modules,
 * as install-edge.sh does), prunes it for the platform, checks its native binaries, and packs it with
 * agent.json into one deterministic tar.gz. Returns the output's size and file count.
 */
export async function buildAgent(o: BuildAgentOptions): Promise<{ out: string; bytes: number; files: number; version: string }> {
  if (!existsSync(join(o.source, 'dist/bin/edge.js'))) throw new UsageError(`${o.source} is not built (no dist/bin/edge.js): run \`npm run build\` first`);
  if (!existsSync(join(o.source, 'node_modules'))) throw new UsageError(`${o.source} has no node_modules: run \`npm install\` first`);
  const pkg = JSON.parse(await readFile(join(o.source, 'package.json'), 'utf8')) as { version?: string };
  const version = o.version ?? pkg.version;
  if (!version) throw new UsageError('--version: the checkout\'s package.json has no version; give --version');
  const packager = join(o.source, 'deploy/edge-package.mjs');
  if (!existsSync(packager)) throw new UsageError(`${packager} not found`);
  const stage = await mkdtemp(join(tmpdir(), 'apprentice-agent-'));
  try {
    o.onStep?.({ step: 'stage', detail: `lean edge bundle from ${o.source}` });
    try {
      await run(process.execPath, [packager, '--source', o.source, '--out', stage, '--copy-node-modules'], { maxBuffer: 16 * 1024 * 1024 });
    } catch (err) {
      throw new UsageError(`staging the edge bundle failed: ${((err as { stderr?: string }).stderr ?? (err as Error).message).trim()}`);
    }
    // The bundle's package.json says the version the daemon reports (edge/status/agent-version.ts).
    const staged = JSON.parse(await readFile(join(stage, 'package.json'), 'utf8')) as Record<string, unknown>;
    if (staged.version !== version) await writeFile(join(stage, 'package.json'), `${JSON.stringify({ ...staged, version }, null, 2)}\n`);
    const nm = join(stage, 'node_modules');
    if (existsSync(nm)) {
      o.onStep?.({ step: 'prune', detail: `node_modules for ${o.platform}` });
      await pruneForPlatform(nm, o.platform);
      o.onStep?.({ step: 'check', detail: `native binaries are ${o.platform}` });
      await checkNatives(nm, o.platform);
    }
    o.onStep?.({ step: 'pack', detail: o.out });
    await mkdir(dirname(o.out), { recursive: true });
    const files = await packAgentBundle({ root: stage, out: o.out, version, platform: o.platform, onFile: o.onFile });
    return { out: o.out, bytes: (await stat(o.out)).size, files, version };
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}
