/**
 * Issue 15 item 3: artifacts every replica can serve. The registry-backed, content-addressed store on both
 * dialects (SQLite file, throwaway PostgreSQL database): chunked round trips, Range reads that touch only the
 * chunks they cover, concurrent puts of the same content, refused puts that store nothing, and the device
 * artifact route served from it.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq, sql } from 'drizzle-orm';
import { Registry as PromRegistry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createCloudApi } from '../../../cloud/api/app.js';
import { startCloudServer } from '../../../cloud/api/server.js';
import { ArtifactRejectedError, ArtifactUnavailableError, openArtifacts, type Artifacts } from '../../../cloud/artifacts/index.js';
import { registryBlobs } from '../../../cloud/artifacts/registry-blobs.js';
import { KeyStore } from '../../../cloud/keys/store.js';
import { hashPassword } from '../../../cloud/provision/passwd.js';
import type { Registry } from '../../../cloud/registry/db.js';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { silentLogger } from '../../../shared/log/index.js';
import { registryDialects } from '../../helpers/dialects.js';
import { FakeRollouts, FakeRounds, TOKEN } from '../../unit/cloud-api/helpers.js';

const dialects = registryDialects();
const CHUNK = 64 * 1024;
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function drain(s: ReadableStream<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of s) parts.push(Buffer.from(p));
  return Buffer.concat(parts);
}

async function counts(reg: StoreRegistry): Promise<{ blobs: number; chunks: number }> {
  const [b] = await reg.q.select({ n: sql<number>`count(*)` }).from(reg.t.artifactBlobs);
  const [c] = await reg.q.select({ n: sql<number>`count(*)` }).from(reg.t.artifactChunks);
  return { blobs: Number(b!.n), chunks: Number(c!.n) };
}

/** A source that yields `bytes` in uneven pieces, then (optionally) fails. */
async function* uneven(bytes: Uint8Array, failAfter?: number): AsyncGenerator<Uint8Array> {
  for (let off = 0, i = 0; off < bytes.length; i++) {
    if (failAfter !== undefined && off >= failAfter) throw new Error('client went away');
    const n = Math.min(bytes.length - off, 1000 + ((i * 7919) % 50_000));
    yield bytes.subarray(off, off + n);
    off += n;
  }
}

describe.each(dialects)('registry artifact store on $name', (d) => {
  let reg: StoreRegistry;
  let dir: string;
  let metrics: PromRegistry;
  let arts: Artifacts;
  const refusals = async (reason: string) => (await metrics.getSingleMetricAsString('apprentice_artifact_put_refused_total')).split('\n').find((l) => l.includes(`reason="${reason}"`))?.split(' ')[1];
  beforeEach(async (ctx) => {
    reg = await d.open(ctx);
    dir = mkdtempSync(join(tmpdir(), 'apprentice-artifacts-'));
    metrics = new PromRegistry();
    arts = openArtifacts({ registry: reg, dataDir: dir, log: silentLogger, metrics, backend: 'registry', chunkBytes: CHUNK });
  });
  afterEach(async () => {
    await d.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('round-trips a multi-chunk blob from a file, in 64 KiB chunk rows; a second put of it is a no-op', async () => {
    const bytes = randomBytes(5 * CHUNK + 123);
    const file = join(dir, 'model.onnx');
    writeFileSync(file, bytes);
    const put = await arts.blobs.put('model', { path: file }, { sha256: sha(bytes), bytes: bytes.length });
    expect(put).toEqual({ sha256: sha(bytes), bytes: bytes.length, created: true, relPath: join('artifacts', `${sha(bytes)}.onnx`) });
    expect(await counts(reg)).toEqual({ blobs: 1, chunks: 6 });
    const [row] = await reg.q.select().from(reg.t.artifactBlobs);
    expect(row).toMatchObject({ sha256: sha(bytes), bytes: bytes.length, chunkSize: CHUNK });
    expect(Buffer.from(await arts.blobs.readAll('model', sha(bytes))).equals(bytes)).toBe(true);
    // Same content again, from a stream without an expectation: hashed, found, its staged chunks dropped.
    expect(await arts.blobs.put('model', uneven(bytes))).toMatchObject({ sha256: sha(bytes), created: false });
    expect(await counts(reg)).toEqual({ blobs: 1, chunks: 6 });
  });

  it('stores 1 MiB chunks by default, and an empty blob as a row without chunks', async () => {
    const big = randomBytes(2 * 1024 * 1024 + 5);
    const blobs = registryBlobs({ registry: reg, cacheDir: join(dir, 'cache'), log: silentLogger });
    await blobs.put('dataset', big);
    expect(await counts(reg)).toEqual({ blobs: 1, chunks: 3 });
    const [row] = await reg.q.select({ chunkSize: reg.t.artifactBlobs.chunkSize }).from(reg.t.artifactBlobs);
    expect(row!.chunkSize).toBe(1024 * 1024);
    if (reg.dialect === 'postgres') {
      // Stored out of line and uncompressed (migration 0002), so a Range's substr() reads only its slices.
      const { rows } = await reg.pool.query<{ s: string }>(`select attstorage as s from pg_attribute where attrelid = 'artifact_chunks'::regclass and attname = 'data'`);
      expect(rows[0]!.s).toBe('e');
    }
    const empty = await blobs.put('dataset', new Uint8Array(0));
    expect(empty).toMatchObject({ sha256: sha(new Uint8Array(0)), bytes: 0, created: true });
    expect((await blobs.readAll('dataset', empty.sha256)).byteLength).toBe(0);
    expect(await counts(reg)).toEqual({ blobs: 2, chunks: 3 });
  });

  it('streams a put: chunks are written while the source is still producing, and are invisible until it ends', async () => {
    const bytes = randomBytes(2 * CHUNK + 100);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    async function* slow(): AsyncGenerator<Uint8Array> {
      yield bytes.subarray(0, 2 * CHUNK + 50);
      await gate;
      yield bytes.subarray(2 * CHUNK + 50);
    }
    const putting = arts.blobs.put('model', slow());
    const deadline = Date.now() + 10_000;
    while ((await counts(reg)).chunks < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    // Two full chunks are in the database with the source not finished; no reader can see the blob yet.
    expect(await counts(reg)).toEqual({ blobs: 0, chunks: 2 });
    expect(await arts.blobs.open('model', sha(bytes))).toBeUndefined();
    release();
    expect(await putting).toMatchObject({ sha256: sha(bytes), created: true });
    expect(await counts(reg)).toEqual({ blobs: 1, chunks: 3 });
  });

  it('reads ranges across chunk borders: first byte, last byte, spanning, exact chunks, whole', async () => {
    const bytes = randomBytes(4 * CHUNK + 10);
    await arts.blobs.put('model', bytes);
    const blob = (await arts.blobs.open('model', sha(bytes)))!;
    expect(blob.bytes).toBe(bytes.length);
    const cases: [number, number][] = [
      [0, 0],
      [bytes.length - 1, bytes.length - 1],
      [CHUNK - 1, CHUNK],
      [CHUNK - 5, 3 * CHUNK + 4],
      [CHUNK, 2 * CHUNK - 1],
      [4 * CHUNK, bytes.length - 1],
      [0, bytes.length - 1],
    ];
    for (const [s, e] of cases) expect((await drain(blob.read(s, e))).equals(bytes.subarray(s, e + 1)), `${s}-${e}`).toBe(true);
  });

  it('a range read fetches only the chunks it covers (a damaged chunk outside the range is never touched)', async () => {
    const bytes = randomBytes(3 * CHUNK);
    await arts.blobs.put('model', bytes);
    const [{ chunkSet }] = (await reg.q.select({ chunkSet: reg.t.artifactBlobs.chunkSet }).from(reg.t.artifactBlobs)) as [{ chunkSet: string }];
    await reg.q.delete(reg.t.artifactChunks).where(sql`${reg.t.artifactChunks.chunkSet} = ${chunkSet} and ${reg.t.artifactChunks.idx} = 1`);
    const blob = (await arts.blobs.open('model', sha(bytes)))!;
    expect((await drain(blob.read(10, CHUNK - 1))).equals(bytes.subarray(10, CHUNK))).toBe(true);
    expect((await drain(blob.read(2 * CHUNK, 3 * CHUNK - 1))).equals(bytes.subarray(2 * CHUNK))).toBe(true);
    await expect(drain(blob.read(CHUNK - 1, CHUNK))).rejects.toThrow(/chunk 1 is missing or damaged/);
    await expect(arts.blobs.readAll('model', sha(bytes))).rejects.toBeInstanceOf(ArtifactUnavailableError);
  });

  it('concurrent puts of the same content, from two connections, store it once and leave no stray chunks', async () => {
    const other = openArtifacts({ registry: await d.openAnother(), dataDir: dir, log: silentLogger, backend: 'registry', chunkBytes: CHUNK });
    const bytes = randomBytes(3 * CHUNK + 77);
    const results = await Promise.all([arts.blobs.put('model', uneven(bytes)), other.blobs.put('model', uneven(bytes)), arts.blobs.put('model', bytes), other.blobs.put('model', { path: (writeFileSync(join(dir, 'x'), bytes), join(dir, 'x')) })]);
    expect(results.map((r) => r.sha256)).toEqual(Array(4).fill(sha(bytes)));
    expect(results.filter((r) => r.created)).toHaveLength(1);
    expect(await counts(reg)).toEqual({ blobs: 1, chunks: 4 });
    expect(Buffer.from(await other.blobs.readAll('model', sha(bytes))).equals(bytes)).toBe(true);
  });

  it('refuses corrupt, short, long and failing uploads with nothing stored, counting each refusal', async () => {
    const bytes = randomBytes(2 * CHUNK + 1);
    const refused = (p: Promise<unknown>, reason: string) => expect(p).rejects.toSatisfy((e) => e instanceof ArtifactRejectedError && e.reason === reason);
    await refused(arts.blobs.put('model', bytes, { sha256: sha(randomBytes(8)) }), 'sha256_mismatch');
    await refused(arts.blobs.put('model', uneven(bytes.subarray(0, CHUNK + 5)), { sha256: sha(bytes), bytes: bytes.length }), 'length_mismatch');
    await refused(arts.blobs.put('model', uneven(bytes), { bytes: CHUNK }), 'length_mismatch');
    await refused(arts.blobs.put('model', bytes, { sha256: 'ABC' }), 'bad_sha256');
    await expect(arts.blobs.put('model', uneven(bytes, CHUNK + 1))).rejects.toThrow('client went away');
    expect(await counts(reg)).toEqual({ blobs: 0, chunks: 0 });
    expect(await arts.blobs.open('model', sha(bytes))).toBeUndefined();
    expect([await refusals('sha256_mismatch'), await refusals('length_mismatch'), await refusals('bad_sha256')]).toEqual(['1', '2', '1']);
  });

  it('a missing sha256 is undefined (open, served) and unavailable (readAll, localPath)', async () => {
    const missing = sha(randomBytes(4));
    expect(await arts.blobs.open('model', missing)).toBeUndefined();
    expect(await arts.served.get(missing)).toBeUndefined();
    await expect(arts.blobs.readAll('model', missing)).rejects.toThrow(/not stored/);
    await expect(arts.blobs.localPath('teacher', missing)).rejects.toThrow(/not stored/);
  });

  it('a put that names stored content does not read its source; a length disagreeing with the stored blob is refused', async () => {
    const bytes = randomBytes(CHUNK + 3);
    await arts.blobs.put('teacher', bytes);
    const untouchable: AsyncIterable<Uint8Array> = {
      [Symbol.asyncIterator]: () => {
        throw new Error('source read');
      },
    };
    expect(await arts.blobs.put('teacher', untouchable, { sha256: sha(bytes), bytes: bytes.length })).toMatchObject({ created: false, bytes: bytes.length });
    await expect(arts.blobs.put('teacher', untouchable, { sha256: sha(bytes), bytes: 5 })).rejects.toThrow(/stored with .* bytes, expected 5/);
  });

  it('localPath materialises a verified copy for code that needs a file (teacher files, datasets), once', async () => {
    const bytes = randomBytes(2 * CHUNK + 9);
    await arts.blobs.put('teacher', bytes);
    const path = await arts.blobs.localPath('teacher', sha(bytes));
    expect(path).toBe(join(dir, 'cache', 'artifacts', sha(bytes)));
    expect(readFileSync(path).equals(bytes)).toBe(true);
    // The copy is reused: with the chunks gone from the registry, the verified file still answers.
    await reg.q.delete(reg.t.artifactChunks);
    expect(await arts.blobs.localPath('teacher', sha(bytes))).toBe(path);
    await reg.q.delete(reg.t.artifactBlobs);
    await arts.blobs.put('teacher', bytes);
    // A second replica (its own cache dir) reaches the same bytes through the registry.
    const other = openArtifacts({ registry: await d.openAnother(), dataDir: mkdtempSync(join(dir, 'replica-')), log: silentLogger, backend: 'registry' });
    expect(readFileSync(await other.blobs.localPath('teacher', sha(bytes))).equals(bytes)).toBe(true);
  });

  it('sweeps the chunks of puts that never finished, only once they are old', async () => {
    await arts.blobs.put('model', randomBytes(CHUNK + 1));
    await reg.q.insert(reg.t.artifactChunks).values([
      { chunkSet: 'crashed', idx: 0, data: randomBytes(10), createdAt: '2026-01-01T00:00:00.000Z' },
      { chunkSet: 'crashed', idx: 1, data: randomBytes(10), createdAt: '2026-01-01T00:00:01.000Z' },
      { chunkSet: 'in-progress', idx: 0, data: randomBytes(10) },
    ]);
    expect(await arts.sweep(new Date(Date.now() - 3600_000))).toBe(2);
    const sets = await reg.q.selectDistinct({ s: reg.t.artifactChunks.chunkSet }).from(reg.t.artifactChunks);
    expect(sets.map((r) => r.s).sort()).toHaveLength(2);
    expect(sets.map((r) => r.s)).toContain('in-progress');
    expect((await arts.blobs.readAll('model', (await reg.q.select().from(reg.t.artifactBlobs))[0]!.sha256)).byteLength).toBe(CHUNK + 1);
  });

  it('GET /v1/artifacts/{sha256} serves a release from the registry store, with Range across chunk borders', async () => {
    const keys = KeyStore.open({ dir: join(dir, 'keys') });
    await reg.q.insert(reg.t.models).values({ name: 'digits', inputSpec: { shape: [4] }, labels: ['a', 'b'], teacher: { files: ['t.onnx'], outputKind: 'logits' }, studentSpec: 'mlp:8', distillSettings: {} });
    await reg.q.insert(reg.t.devices).values({ id: 'pi-1', groups: [], credentialHash: hashPassword('s3cret') });
    const bytes = randomBytes(3 * CHUNK + 500);
    const put = await arts.blobs.put('model', bytes);
    await reg.q.insert(reg.t.releases).values({ model: 'digits', seq: 3, sha256: put.sha256, bytes: put.bytes, quantization: 'int8', metrics: {}, manifest: { v: 1 }, signature: { alg: 'ed25519', keyId: 'k', sig: 'AA==' }, artifactPath: put.relPath });
    // A teacher file in the same store is not a release: devices cannot fetch it.
    const teacher = await arts.blobs.put('teacher', randomBytes(100));
    const registry = reg as unknown as Registry; // FakeRounds/FakeRollouts (the SQLite API harness) want SQLite's type; this route uses only `q` and `t`
    const app = createCloudApi({ registry, keys, adminToken: TOKEN, broker: { publicUrl: 'mqtt://x' }, rounds: new FakeRounds(registry), rollouts: new FakeRollouts(registry), artifactsDir: join(dir, 'no-files-here'), artifacts: { store: arts.served, clientAddress: () => '127.0.0.1' } });
    const auth = { authorization: `Basic ${Buffer.from('pi-1:s3cret').toString('base64')}` };

    const whole = await app.request(`/v1/artifacts/${put.sha256}`, { headers: auth });
    expect(whole.status).toBe(200);
    expect(whole.headers.get('content-disposition')).toBe('attachment; filename="digits-3.onnx"');
    expect(Buffer.from(await whole.arrayBuffer()).equals(bytes)).toBe(true);
    for (const [range, s, e] of [['bytes=0-0', 0, 0], [`bytes=${CHUNK - 2}-${2 * CHUNK + 1}`, CHUNK - 2, 2 * CHUNK + 1], ['bytes=-1', bytes.length - 1, bytes.length - 1], [`bytes=${3 * CHUNK}-`, 3 * CHUNK, bytes.length - 1]] as const) {
      const res = await app.request(`/v1/artifacts/${put.sha256}`, { headers: { ...auth, range } });
      expect(res.status, range).toBe(206);
      expect(res.headers.get('content-range')).toBe(`bytes ${s}-${e}/${bytes.length}`);
      expect(Buffer.from(await res.arrayBuffer()).equals(bytes.subarray(s, e + 1)), range).toBe(true);
    }
    expect((await app.request(`/v1/artifacts/${put.sha256}`, { headers: { ...auth, range: `bytes=${bytes.length}-` } })).status).toBe(416);
    expect((await app.request(`/v1/artifacts/${teacher.sha256}`, { headers: auth })).status).toBe(404);
    expect((await app.request(`/v1/artifacts/${put.sha256}`, { headers: { authorization: `Basic ${Buffer.from('pi-1:nope').toString('base64')}` } })).status).toBe(401);

    // Over a real loopback socket too.
    const server = await startCloudServer({ app, port: 0 });
    try {
      const res = await fetch(`${server.url}/v1/artifacts/${put.sha256}`, { headers: { ...auth, range: `bytes=${CHUNK}-${2 * CHUNK}` } });
      expect(res.status).toBe(206);
      expect(Buffer.from(await res.arrayBuffer()).equals(bytes.subarray(CHUNK, 2 * CHUNK + 1))).toBe(true);
    } finally {
      await server.stop();
    }
    // A blob whose size disagrees with its release row is refused, not served short.
    await reg.q.update(reg.t.releases).set({ bytes: bytes.length + 1 }).where(eq(reg.t.releases.seq, 3));
    const bad = await app.request(`/v1/artifacts/${put.sha256}`, { headers: auth });
    expect(bad.status).toBe(500);
    expect(((await bad.json()) as { error: { code: string } }).error.code).toBe('artifact_unavailable');
  });
});
