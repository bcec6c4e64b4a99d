/**
 * A streaming reader of (gzipped) ustar archives, for agent bundles (issue 14).
 *
 * Why not the `tar` package: extraction libraries sanitise what they dislike (strip a leading `/`,
 * skip `..`, create links) and go on; an agent update must instead *refuse* the whole archive on the
 * first such entry, before any of it runs, and check every byte against the signed listing while it
 * is written. The subset needed for that is small: ustar headers (name + prefix), pax `x` records for
 * long paths and sizes, GNU `L` long names, regular files and directories. Anything else (hard or
 * symbolic links, devices, FIFOs, sparse files) is refused.
 */

export const BLOCK = 512;
/** Largest pax or GNU long-name record accepted (a path is at most 1,024 bytes by the protocol). */
export const MAX_META_BYTES = 64 * 1024;

export type TarEntryType = 'file' | 'dir';

export interface TarHeader {
  path: string;
  type: TarEntryType;
  mode: number;
  size: number;
}

export class TarError extends Error {
  override readonly name = 'TarError';
}

function field(buf: Buffer, off: number, len: number): string {
  const raw = buf.subarray(off, off + len);
  const nul = raw.indexOf(0);
  return raw.subarray(0, nul === -1 ? len : nul).toString('utf8');
}

function octal(buf: Buffer, off: number, len: number, what: string): number {
  if ((buf[off]! & 0x80) !== 0) throw new TarError(`${what}: base-256 numbers are not supported`);
  const s = field(buf, off, len).trim();
  if (s === '') return 0;
  if (!/^[0-7]{1,12}$/.test(s)) throw new TarError(`${what}: not an octal number (${JSON.stringify(s.slice(0, 16))})`);
  const n = parseInt(s, 8);
  if (!Number.isSafeInteger(n)) throw new TarError(`${what}: out of range`);
  return n;
}

function checksumOk(block: Buffer): boolean {
  const stored = octal(block, 148, 8, 'header checksum');
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
  return sum === stored;
}

/** Parses `len key=value\n` pax records; only `path` and `size` matter here. */
export function parsePax(data: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  let pos = 0;
  while (pos < data.length) {
    const sp = data.indexOf(0x20, pos);
    if (sp === -1) throw new TarError('pax record without a length');
    const lenText = data.subarray(pos, sp).toString('ascii');
    if (!/^\d{1,6}$/.test(lenText)) throw new TarError(`pax record length ${JSON.stringify(lenText.slice(0, 8))} is invalid`);
    const len = Number(lenText);
    if (len <= sp - pos + 1 || pos + len > data.length || data[pos + len - 1] !== 0x0a) throw new TarError('pax record overruns its header');
    const rec = data.subarray(sp + 1, pos + len - 1).toString('utf8');
    const eq = rec.indexOf('=');
    if (eq <= 0) throw new TarError('pax record without key=value');
    out.set(rec.slice(0, eq), rec.slice(eq + 1));
    pos += len;
  }
  return out;
}

export interface TarVisitor {
  /** An entry's header; for a file, `data` is then called with its bytes in order, then `end`. */
  entry(h: TarHeader): Promise<void>;
  data(chunk: Buffer): Promise<void>;
  end(): Promise<void>;
}

/**
 * Feeds the decompressed archive `source` to `visitor`. Throws TarError on anything malformed or
 * unsupported (the visitor's own errors pass through unchanged).
 */
export async function readTar(source: AsyncIterable<Buffer>, visitor: TarVisitor): Promise<{ entries: number }> {
  let buf: Buffer = Buffer.alloc(0);
  let entries = 0;
  let phase = 'header' as 'header' | 'file' | 'meta' | 'pad' | 'end';
  let left = 0; // bytes left of the file or meta record
  let padAfter = 0;
  let meta: { kind: 'x' | 'g' | 'L'; parts: Buffer[] } | null = null;
  let pending: { path?: string; size?: number } = {};

  const padOf = (size: number): number => (BLOCK - (size % BLOCK)) % BLOCK;

  const finishMeta = (): void => {
    const data = Buffer.concat(meta!.parts);
    if (meta!.kind === 'x') {
      const pax = parsePax(data);
      if (pax.has('path')) pending.path = pax.get('path')!;
      const s = pax.get('size');
      if (s !== undefined) {
        if (!/^\d{1,15}$/.test(s)) throw new TarError(`pax size ${JSON.stringify(s.slice(0, 16))} is invalid`);
        pending.size = Number(s);
      }
    } else if (meta!.kind === 'L') {
      const nul = data.indexOf(0);
      pending.path = data.subarray(0, nul === -1 ? data.length : nul).toString('utf8');
    }
    meta = null;
  };

  const header = async (block: Buffer): Promise<void> => {
    if (block.every((b) => b === 0)) {
      phase = 'end'; // end of archive: the second zero block and any trailing padding are not read
      return;
    }
    if (!checksumOk(block)) throw new TarError(`header ${entries + 1}: checksum mismatch (not a tar archive, or corrupt)`);
    const magic = field(block, 257, 6);
    if (magic !== 'ustar' && magic !== 'ustar ') throw new TarError(`header ${entries + 1}: not a ustar header (magic ${JSON.stringify(magic)})`);
    const flag = String.fromCharCode(block[156]!);
    const size = octal(block, 124, 12, 'entry size');
    if (flag === 'x' || flag === 'g' || flag === 'L') {
      if (size > MAX_META_BYTES) throw new TarError(`a ${flag} record of ${size} bytes is over the ${MAX_META_BYTES}-byte bound`);
      meta = { kind: flag, parts: [] };
      left = size;
      padAfter = padOf(size);
      phase = 'meta';
      return;
    }
    const prefix = magic === 'ustar' ? field(block, 345, 155) : '';
    const name = field(block, 0, 100);
    const path = pending.path ?? (prefix ? `${prefix}/${name}` : name);
    const realSize = pending.size ?? size;
    pending = {};
    entries++;
    const mode = octal(block, 100, 8, 'entry mode');
    if (flag === '0' || flag === '\0' || flag === '7') {
      await visitor.entry({ path, type: 'file', mode, size: realSize });
      left = realSize;
      padAfter = padOf(realSize);
      phase = 'file';
    } else if (flag === '5') {
      if (realSize !== 0) throw new TarError(`${path}: a directory with ${realSize} bytes of data`);
      await visitor.entry({ path, type: 'dir', mode, size: 0 });
    } else {
      const kinds: Record<string, string> = { '1': 'a hard link', '2': 'a symbolic link', '3': 'a character device', '4': 'a block device', '6': 'a FIFO', S: 'a sparse file' };
      throw new TarError(`${path}: ${kinds[flag] ?? `an entry of type ${JSON.stringify(flag)}`}; only regular files and directories are allowed`);
    }
  };

  const take = async (): Promise<void> => {
    for (;;) {
      switch (phase) {
        case 'end':
          return;
        case 'header':
          if (buf.length < BLOCK) return;
          {
            const block = buf.subarray(0, BLOCK);
            buf = buf.subarray(BLOCK);
            await header(block);
          }
          break;
        case 'file':
        case 'meta': {
          if (left > 0) {
            if (buf.length === 0) return;
            const n = Math.min(left, buf.length);
            const piece = buf.subarray(0, n);
            buf = buf.subarray(n);
            left -= n;
            if (phase === 'file') await visitor.data(piece);
            else meta!.parts.push(Buffer.from(piece));
            if (left > 0) return;
          }
          if (phase === 'file') await visitor.end();
          else finishMeta();
          left = padAfter;
          phase = 'pad';
          break;
        }
        case 'pad': {
          const n = Math.min(left, buf.length);
          buf = buf.subarray(n);
          left -= n;
          if (left > 0) return;
          phase = 'header';
          break;
        }
      }
    }
  };

  for await (const chunk of source) {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    await take();
    if (phase === 'end') break;
  }
  if (phase !== 'end') throw new TarError(phase === 'header' && buf.length === 0 ? 'archive ends without its end-of-archive block (truncated)' : 'archive ends inside an entry (truncated)');
  return { entries };
}
