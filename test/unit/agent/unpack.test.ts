import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { generateSigningKey } from '../../../shared/manifest/index.js';
import { AgentLayout, readTar, TarError, unpackBundle, UnpackError, entryPath } from '../../../edge/agent/index.js';
import { findExecutable } from '../../helpers/mosquitto.js';
import { makeAgentRelease, makeTar, paxPath, type BundleFile, type TarEntrySpec } from '../../fixtures/agent-release.js';
import { tempDir } from '../updates/fixtures.js';

const key = generateSigningKey();
const FILES: BundleFile[] = [
  { path: 'package.json', data: '{"version":"2.0.0"}\n' },
  { path: 'bin/apprentice-edge.js', data: '#!/usr/bin/env node\nconsole.log(1)\n', mode: 0o755 },
  { path: 'dist/edge/a.js', data: 'export const a = 1;\n'.repeat(100) },
];

let cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups) await c();
  cleanups = [];
});

async function setup(): Promise<{ dir: string; layout: AgentLayout }> {
  const t = await tempDir('apprentice-agent-unpack-');
  cleanups.push(t.cleanup);
  const layout = new AgentLayout(join(t.dir, 'agent'));
  await layout.ensure();
  return { dir: t.dir, layout };
}

/** Unpacks `entries` (as a gzipped tar) against the listing of FILES. */
async function unpackEntries(entries: TarEntrySpec[], files = FILES) {
  const { dir, layout } = await setup();
  const tarball = gzipSync(makeTar(entries));
  const rel = makeAgentRelease(key, { version: '2.0.0', agentSeq: 1, files, tarball });
  const file = join(dir, 'bundle.tgz');
  writeFileSync(file, tarball);
  const run = unpackBundle(file, layout, rel.manifest);
  return { run, layout };
}

const good = (): TarEntrySpec[] => FILES.map((f) => ({ path: f.path, data: Buffer.from(f.data), mode: f.mode ?? 0o644 }));

async function expectRefused(entries: TarEntrySpec[], reason: string, message: RegExp, files = FILES) {
  const { run, layout } = await unpackEntries(entries, files);
  const err = await run.then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(UnpackError);
  expect((err as UnpackError).reason).toBe(reason);
  expect((err as Error).message).toMatch(message);
  // Nothing left behind: neither the version nor its .partial directory.
  expect(readdirSync(layout.root)).toEqual([]);
}

describe('unpackBundle', () => {
  it('unpacks a bundle into <root>/<version> with the listed modes and contents', async () => {
    const { dir, layout } = await setup();
    const rel = makeAgentRelease(key, { version: '2.0.0', agentSeq: 1, files: FILES });
    const file = join(dir, 'b.tgz');
    writeFileSync(file, rel.tarball);
    const r = await unpackBundle(file, layout, rel.manifest);
    expect(r.files).toBe(3);
    expect(readdirSync(layout.root)).toEqual(['2.0.0']);
    const entry = join(layout.root, '2.0.0/bin/apprentice-edge.js');
    expect(statSync(entry).mode & 0o777).toBe(0o755);
    expect(readFileSync(join(layout.root, '2.0.0/dist/edge/a.js'), 'utf8')).toBe(FILES[2]!.data);
  });

  it('reads archives written by GNU tar (pax and gnu formats, long paths)', async (ctx) => {
    const tar = findExecutable('tar');
    if (!tar) return ctx.skip('GNU tar is not installed');
    const long = `dist/${'d'.repeat(120)}/${'f'.repeat(90)}.js`;
    const files = [...FILES, { path: long, data: 'long\n' }];
    for (const format of ['pax', 'gnu', 'ustar']) {
      const { dir, layout } = await setup();
      const src = join(dir, 'src');
      for (const f of files) {
        mkdirSync(join(src, f.path, '..'), { recursive: true });
        writeFileSync(join(src, f.path), f.data, { mode: f.mode ?? 0o644 });
      }
      const file = join(dir, 'b.tgz');
      const args = ['-czf', file, `--format=${format}`, '--owner=0', '--group=0', '-C', src, '.'];
      try {
        execFileSync(tar, args, { stdio: 'pipe' });
      } catch (err) {
        // ustar cannot hold the 217-byte path: GNU tar says so; the other formats must work.
        expect(format).toBe('ustar');
        expect(String((err as { stderr?: Buffer }).stderr)).toMatch(/too long|file name/i);
        continue;
      }
      const rel = makeAgentRelease(key, { version: '2.0.0', agentSeq: 1, files, tarball: readFileSync(file) });
      const r = await unpackBundle(file, layout, rel.manifest);
      expect(r.files, format).toBe(4);
      expect(readFileSync(join(layout.root, '2.0.0', long), 'utf8')).toBe('long\n');
    }
  });

  it('takes a path from a pax header', async () => {
    const long = `dist/${'x'.repeat(200)}.js`;
    const files = [...FILES, { path: long, data: 'p' }];
    const { run } = await unpackEntries([...good(), paxPath(long), { path: 'ignored-name', data: 'p' }], files);
    await expect(run).resolves.toMatchObject({ files: 4 });
  });

  it('refuses absolute paths, "..", symlinks, hard links and devices before writing anything', async () => {
    await expectRefused([{ path: '/etc/passwd', data: 'x' }, ...good()], 'unpack_failed', /absolute/);
    await expectRefused([{ path: '../escape.js', data: 'x' }, ...good()], 'unpack_failed', /"\.\."/);
    await expectRefused([{ path: 'bin/../../escape.js', data: 'x' }, ...good()], 'unpack_failed', /"\.\."/);
    await expectRefused([{ path: 'lib', type: '2', linkname: '/etc' }, ...good()], 'unpack_failed', /symbolic link/);
    await expectRefused([...good(), { path: 'hard', type: '1', linkname: 'package.json' }], 'unpack_failed', /hard link/);
    await expectRefused([{ path: 'dev', type: '3' }, ...good()], 'unpack_failed', /character device/);
    await expectRefused([{ path: 'fifo', type: '6' }, ...good()], 'unpack_failed', /FIFO/);
  });

  it('refuses anything that differs from the signed listing', async () => {
    await expectRefused([...good(), { path: 'extra.js', data: 'x' }], 'listing_mismatch', /not in the signed listing/);
    await expectRefused(good().slice(0, 2), 'listing_mismatch', /missing/);
    const tampered = good();
    tampered[2] = { ...tampered[2]!, data: Buffer.from((FILES[2]!.data as string).replace('a = 1', 'a = 2')) };
    await expectRefused(tampered, 'listing_mismatch', /sha256/);
    const wrongMode = good();
    wrongMode[1] = { ...wrongMode[1]!, mode: 0o4755 };
    await expectRefused(wrongMode, 'listing_mismatch', /mode 4755/);
    await expectRefused([...good(), good()[0]!], 'listing_mismatch', /twice|not in the signed/);
    const longer = good();
    longer[0] = { ...longer[0]!, data: Buffer.from('{"version":"2.0.0"} \n') };
    await expectRefused(longer, 'listing_mismatch', /bytes in the archive/);
  });

  it('refuses malformed archives: bad checksum, truncation, not gzip, a lying size', async () => {
    await expectRefused([{ ...good()[0]!, badChecksum: true }, ...good().slice(1)], 'unpack_failed', /checksum/);
    const { dir, layout } = await setup();
    const rel = makeAgentRelease(key, { version: '2.0.0', agentSeq: 1, files: FILES });
    const cases: Array<[Buffer, RegExp]> = [
      [gzipSync(makeTar(good(), { end: false })), /truncated/],
      [gzipSync(makeTar(good()).subarray(0, 700)), /truncated/],
      [Buffer.from('not gzip at all'), /incorrect header|unexpected end|invalid/i],
      [gzipSync(Buffer.alloc(512, 0x41)), /checksum|octal/],
    ];
    for (const [bytes, re] of cases) {
      const file = join(dir, 'bad.tgz');
      writeFileSync(file, bytes);
      const err = await unpackBundle(file, layout, rel.manifest).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(UnpackError);
      expect((err as Error).message).toMatch(re);
      expect(existsSync(layout.partialDir('2.0.0'))).toBe(false);
    }
  });
});

describe('readTar bounds', () => {
  it('refuses an oversized pax record and a bad pax length', async () => {
    const visitor = { entry: async () => undefined, data: async () => undefined, end: async () => undefined };
    const big = makeTar([{ path: 'PaxHeader', type: 'x', data: Buffer.alloc(70_000, 0x20) }]);
    await expect(readTar(Readable.from([big]), visitor)).rejects.toThrow(/over the 65536-byte bound/);
    const bad = makeTar([{ path: 'PaxHeader', type: 'x', data: '99999 path=a\n' }, { path: 'a', data: 'x' }]);
    await expect(readTar(Readable.from([bad]), visitor)).rejects.toBeInstanceOf(TarError);
  });

  it('entryPath strips ./ and refuses escapes', () => {
    expect(entryPath('./')).toBeNull();
    expect(entryPath('./bin/x.js')).toBe('bin/x.js');
    expect(entryPath('dist/')).toBe('dist');
    expect(() => entryPath('a//b')).toThrow(UnpackError);
    expect(() => entryPath('a/./b')).toThrow(UnpackError);
  });
});
