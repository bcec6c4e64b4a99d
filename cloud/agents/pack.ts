import { chmod, lstat, readdir, writeFile } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { create } from 'tar';
import type { AgentPlatform } from '../../shared/protocol/agent.js';
import { AGENT_INFO_FILE } from './archive.js';

/** Fixed entry time: the same bundle packs to the same bytes (and so the same sha256) on every build. */
const EPOCH = new Date(0);

/** Every regular file under `root`, as sorted POSIX relative paths; symlinks are refused (not in the signed listing). */
export async function listBundleFiles(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const abs = join(dir, e.name);
      if (e.isDirectory()) await walk(abs);
      else if (e.isFile()) out.push(relative(root, abs).split(sep).join('/'));
      else if (e.isSymbolicLink()) throw new Error(`${relative(root, abs)}: symlinks cannot go into an agent bundle (the signed listing covers regular files only)`);
      else throw new Error(`${relative(root, abs)}: not a regular file or directory`);
    }
  };
  await walk(root);
  return out.sort();
}

/**
 * Packs the bundle directory `root` into a deterministic tar.gz at `out` (the `tar` package, not a
 * hand-written writer: it handles long paths with pax headers, which node_modules needs). Writes
 * `agent.json` {version, platform} at the root first. Permissions are normalized the way
 * deploy/install-edge.sh does (`u=rwX,go=rX`: 0755 for executables and directories, 0644 otherwise),
 * owners and times left out, entries sorted. Returns the number of files packed.
 *
 * @example
 * await packAgentBundle({ root: stage, out: 'apprentice-edge-0.2.0-linux-x64.tar.gz', version: '0.2.0', platform: 'linux-x64' });
 */
export async function packAgentBundle({ root, out, version, platform, onFile }: { root: string; out: string; version: string; platform: AgentPlatform; onFile?: (n: number, total: number) => void }): Promise<number> {
  await writeFile(join(root, AGENT_INFO_FILE), `${JSON.stringify({ version, platform })}\n`);
  const files = await listBundleFiles(root);
  for (const f of files) {
    const abs = join(root, f);
    const st = await lstat(abs);
    await chmod(abs, st.mode & 0o100 ? 0o755 : 0o644);
  }
  let n = 0;
  await create(
    {
      gzip: { level: 9 },
      file: out,
      cwd: root,
      portable: true,
      mtime: EPOCH,
      noDirRecurse: true,
      strict: true,
      onWriteEntry: () => onFile?.(++n, files.length),
    },
    files,
  );
  return files.length;
}
