import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { gunzip } from 'node:zlib';
import { DatasetError } from './dataset.js';

const gunzipAsync = promisify(gunzip);

/**
 * Reads a dataset file, gunzipping it when it starts with the gzip magic bytes. Detection is by
 * content, not extension, because datasets are often renamed (or shipped decompressed as `.gz`).
 * Missing/unreadable files and empty files become DatasetErrors naming the file.
 */
export async function readDataFile(file: string): Promise<Buffer> {
  let buf: Buffer;
  try {
    buf = await readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new DatasetError('file not found', file);
    if (code === 'EISDIR') throw new DatasetError('is a directory, expected a file', file);
    throw new DatasetError(`cannot read file (${code ?? (err as Error).message})`, file);
  }
  if (buf.length === 0) throw new DatasetError('empty file', file);
  if (buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) {
    try {
      buf = await gunzipAsync(buf);
    } catch (err) {
      throw new DatasetError(`corrupt gzip data (${(err as Error).message})`, file);
    }
    if (buf.length === 0) throw new DatasetError('empty file (after gunzip)', file);
  }
  return buf;
}
