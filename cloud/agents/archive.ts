import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { posix } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Parser, type ReadEntry } from 'tar';
import { AGENT_PLATFORMS, MAX_AGENT_BYTES, MAX_AGENT_FILES, agentPath, type AgentFile, type AgentPlatform } from '../../shared/protocol/agent.js';
import { agentVersion } from '../../shared/protocol/schemas.js';

/** The small file every agent tarball carries at its root: what `apprentice agent build` packed. */
export const AGENT_INFO_FILE = 'agent.json';
/** Largest agent.json read (it holds two short strings). */
const MAX_INFO_BYTES = 4096;
/**
 * Most bytes all files may unpack to: a tarball within MAX_AGENT_BYTES could otherwise be a gzip bomb
 * that fills the device's data dir (the lean bundle unpacks to ~4× its compressed size).
 */
export const MAX_AGENT_UNPACKED_BYTES = 4 * MAX_AGENT_BYTES;

export type ArchiveRefusal = 'not_tar_gz' | 'unsafe_entry' | 'too_many_files' | 'too_large' | 'bad_agent_json' | 'duplicate_path' | 'empty_archive';

/** The archive is not one the cloud signs; `code` names why (the API's 422 error code). */
export class ArchiveRejectedError extends Error {
  override readonly name = 'ArchiveRejectedError';
  constructor(
    readonly code: ArchiveRefusal,
    message: string,
  ) {
    super(message);
  }
}

export interface AgentArchiveInfo {
  /** Every regular file, sorted by path (the signed listing). */
  files: AgentFile[];
  /** What agent.json says. */
  version: string;
  platform: AgentPlatform;
}

const FILE_TYPES = new Set(['File', 'OldFile', 'ContiguousFile']);
/** Entry types a device could be made to create outside its version directory or that are not data. */
const REFUSED_TYPES = new Set(['Link', 'CharacterDevice', 'BlockDevice', 'FIFO', 'SparseFile', 'TapeVolumeHeader', 'ContinuationFile', 'Unsupported', 'SolarisACL', 'GNUDumpDir', 'Inode']);

/** `./a/b` and `a/b/` (a directory) → `a/b`; the rest is checked by the protocol's agentPath. */
function entryPath(raw: string): string {
  let p = raw;
  while (p.startsWith('./')) p = p.slice(2);
  return p.endsWith('/') ? p.slice(0, -1) : p;
}

/** Whether a symlink at `path` pointing to `target` stays inside the bundle root. */
export function linkStaysInside(path: string, target: string): boolean {
  if (target.startsWith('/')) return false;
  const resolved = posix.normalize(posix.join(posix.dirname(path), target));
  return resolved !== '..' && !resolved.startsWith('../') && !resolved.startsWith('/');
}

/**
 * Reads an agent tarball (tar.gz) once, streaming: the signed listing (path, permission bits, sha256,
 * bytes of every regular file) and its agent.json. Refuses, before anything is stored or signed, what a
 * device must never unpack (issue 14): absolute paths and `..`, symlinks (the listing covers regular
 * files only, and one pointing outside would let a write escape the version directory), hard links,
 * device files and FIFOs, setuid/setgid/sticky bits, duplicate paths, more than MAX_AGENT_FILES files
 * or MAX_AGENT_UNPACKED_BYTES bytes. Throws ArchiveRejectedError naming the first problem.
 *
 * @example
 * const { files, version, platform } = await inspectAgentArchive('/tmp/apprentice-edge-0.2.0-linux-x64.tar.gz');
 */
export async function inspectAgentArchive(path: string): Promise<AgentArchiveInfo> {
  const files: AgentFile[] = [];
  const seen = new Set<string>();
  let unpacked = 0;
  let info: Buffer | undefined;
  let refusal: ArchiveRejectedError | undefined;
  const pending: Promise<void>[] = [];
  const refuse = (code: ArchiveRefusal, message: string): void => {
    refusal ??= new ArchiveRejectedError(code, message);
  };

  const onEntry = (entry: ReadEntry): void => {
    if (refusal) return void entry.resume();
    const raw = entry.path;
    const p = entryPath(raw);
    const type = entry.type;
    if (REFUSED_TYPES.has(type)) return void (refuse('unsafe_entry', `${raw}: ${type} entries are not allowed in an agent bundle`), entry.resume());
    if (type === 'SymbolicLink') {
      const target = entry.linkpath ?? '';
      const why = linkStaysInside(p, target) ? 'symlinks are not allowed (the signed listing covers regular files only)' : `symlink to ${target} escapes the bundle`;
      return void (refuse('unsafe_entry', `${raw}: ${why}`), entry.resume());
    }
    const mode = entry.mode ?? 0o644;
    if (mode & 0o7000) return void (refuse('unsafe_entry', `${raw}: setuid, setgid or sticky bit set (mode ${mode.toString(8)})`), entry.resume());
    if (type === 'Directory') {
      if (p !== '' && p !== '.' && !agentPath.safeParse(p).success) refuse('unsafe_entry', `${raw}: not a relative path inside the bundle (absolute, or with "..")`);
      return void entry.resume();
    }
    if (!FILE_TYPES.has(type)) return void (refuse('unsafe_entry', `${raw}: unexpected entry type ${type}`), entry.resume());
    if (!agentPath.safeParse(p).success) return void (refuse('unsafe_entry', `${raw}: not a relative path inside the bundle (absolute, or with "..")`), entry.resume());
    if (seen.has(p)) return void (refuse('duplicate_path', `${p} appears twice in the archive`), entry.resume());
    seen.add(p);
    if (seen.size > MAX_AGENT_FILES) return void (refuse('too_many_files', `more than ${MAX_AGENT_FILES} files`), entry.resume());
    const size = entry.size ?? 0;
    unpacked += size;
    if (unpacked > MAX_AGENT_UNPACKED_BYTES) return void (refuse('too_large', `the files unpack to more than ${MAX_AGENT_UNPACKED_BYTES} bytes`), entry.resume());
    const hash = createHash('sha256');
    const keep = p === AGENT_INFO_FILE && size <= MAX_INFO_BYTES ? ([] as Buffer[]) : undefined;
    let bytes = 0;
    pending.push(
      new Promise<void>((resolve, reject) => {
        entry.on('data', (c: Buffer) => {
          hash.update(c);
          bytes += c.length;
          keep?.push(c);
        });
        entry.on('end', () => {
          files.push({ path: p, mode: mode & 0o777, sha256: hash.digest('hex'), bytes });
          if (keep) info = Buffer.concat(keep);
          resolve();
        });
        entry.on('error', reject);
      }),
    );
  };

  const parser = new Parser({ strict: true, onReadEntry: onEntry });
  let head: Buffer | undefined;
  const source = createReadStream(path);
  source.once('data', (c) => (head ??= Buffer.from(c as Buffer)));
  try {
    await pipeline(source, parser);
    await Promise.all(pending);
  } catch (err) {
    if (refusal) throw refusal;
    const gz = head !== undefined && head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b;
    throw new ArchiveRejectedError('not_tar_gz', gz ? `not a valid tar.gz: ${(err as Error).message}` : 'not a gzip-compressed tar archive (expected a tar.gz from `apprentice agent build`)');
  }
  if (refusal) throw refusal;
  if (head === undefined || head[0] !== 0x1f || head[1] !== 0x8b) throw new ArchiveRejectedError('not_tar_gz', 'not a gzip-compressed tar archive (expected a tar.gz from `apprentice agent build`)');
  if (!files.length) throw new ArchiveRejectedError('empty_archive', 'the archive holds no files');
  if (!info) throw new ArchiveRejectedError('bad_agent_json', `no ${AGENT_INFO_FILE} (at most ${MAX_INFO_BYTES} bytes) at the archive root: build it with \`apprentice agent build\``);
  const parsed = parseAgentInfo(info);
  files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { files, ...parsed };
}

/** agent.json → {version, platform}; throws ArchiveRejectedError('bad_agent_json'). */
export function parseAgentInfo(bytes: Buffer): { version: string; platform: AgentPlatform } {
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new ArchiveRejectedError('bad_agent_json', `${AGENT_INFO_FILE} is not JSON`);
  }
  const o = v as { version?: unknown; platform?: unknown };
  if (!agentVersion.safeParse(o?.version).success) throw new ArchiveRejectedError('bad_agent_json', `${AGENT_INFO_FILE}: "version" must be a version like 0.2.0`);
  if (!(AGENT_PLATFORMS as readonly unknown[]).includes(o.platform)) throw new ArchiveRejectedError('bad_agent_json', `${AGENT_INFO_FILE}: "platform" must be one of ${AGENT_PLATFORMS.join(', ')}`);
  return { version: o.version as string, platform: o.platform as AgentPlatform };
}
