/**
 * Artifact serving bench (issue 15 item 3): `npm run bench:artifacts`. One 30 MB artifact (random bytes, as
 * incompressible as model weights; BENCH_ARTIFACT_MB) stored in the file store (data dir, SQLite registry) and
 * in the registry store (1 MiB chunk rows in a throwaway PostgreSQL database), both served by the real
 * `GET /v1/artifacts/{sha256}` over a loopback socket in the same run (admin token, so the device password
 * hash does not dominate the timings). Measured per store, sequential requests from this process:
 * - put: ms to store the artifact (from a file);
 * - whole: BENCH_WHOLE (5) full downloads, median ms and MB/s;
 * - range: BENCH_RANGES (60) Range requests of 128 KiB (an MQTT chunk's size) and of 1 MiB at random offsets,
 *   median and p95 ms.
 * Ratios are registry / file. Results: test/bench/results/artifacts.json.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCloudApi } from '../../cloud/api/app.js';
import { startCloudServer } from '../../cloud/api/server.js';
import { openArtifacts, type Artifacts } from '../../cloud/artifacts/index.js';
import { KeyStore } from '../../cloud/keys/store.js';
import type { Registry } from '../../cloud/registry/db.js';
import { openRegistry, type StoreRegistry } from '../../cloud/registry/open.js';
import { silentLogger } from '../../shared/log/index.js';
import { createThrowawayDb, postgresSkipReason } from '../helpers/pg-throwaway.js';
import { FakeRollouts, FakeRounds } from '../unit/cloud-api/helpers.js';
import { writeBenchResult } from './common.js';

const MB = Number(process.env.BENCH_ARTIFACT_MB ?? '30');
const WHOLE = Number(process.env.BENCH_WHOLE ?? '5');
const RANGES = Number(process.env.BENCH_RANGES ?? '60');
const TOKEN = 'bench-admin-token-0123456789abcdef';
const log = (m: string): void => void process.stderr.write(`[artifacts] ${m}\n`);
const r2 = (x: number) => Math.round(x * 100) / 100;

function stats(xs: number[]): { n: number; median: number; p95: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  return { n: s.length, median: r2(s[Math.floor(s.length / 2)]!), p95: r2(s[Math.min(s.length - 1, Math.ceil(s.length * 0.95) - 1)]!), max: r2(s.at(-1)!) };
}

async function fetchBytes(url: string, headers: Record<string, string>, expectStatus: number): Promise<Buffer> {
  const res = await fetch(url, { headers });
  if (res.status !== expectStatus) throw new Error(`${url} ${JSON.stringify(headers)}: ${res.status} ${await res.text()}`);
  return Buffer.from(await res.arrayBuffer());
}

async function measure(name: string, reg: StoreRegistry, dataDir: string, file: string, bytes: Buffer, offsets: number[]) {
  const arts: Artifacts = openArtifacts({ registry: reg, dataDir, log: silentLogger, backend: name === 'file' ? 'file' : 'registry' });
  const t0 = performance.now();
  const put = await arts.blobs.put('model', { path: file }, { bytes: bytes.length });
  const putMs = performance.now() - t0;
  await reg.q.insert(reg.t.models).values({ name: 'digits', inputSpec: { shape: [4] }, labels: ['a'], teacher: { files: ['t.onnx'], outputKind: 'logits' }, studentSpec: 'mlp:8', distillSettings: {} });
  await reg.q.insert(reg.t.releases).values({ model: 'digits', seq: 1, sha256: put.sha256, bytes: put.bytes, quantization: 'fp32', metrics: {}, manifest: { v: 1 }, signature: { alg: 'ed25519', keyId: 'k', sig: 'AA==' }, artifactPath: put.relPath });
  const registry = reg as unknown as Registry; // the API's deps are still typed SQLite (issue 15 in progress); the artifact route uses only `q` and `t`
  const app = createCloudApi({ registry, keys: KeyStore.open({ dir: join(dataDir, 'keys') }), adminToken: TOKEN, broker: { publicUrl: 'mqtt://x' }, rounds: new FakeRounds(registry), rollouts: new FakeRollouts(registry), artifactsDir: dataDir, artifacts: { store: arts.served } });
  const server = await startCloudServer({ app, port: 0 });
  const url = `${server.url}/v1/artifacts/${put.sha256}`;
  const auth = { authorization: `Bearer ${TOKEN}` };
  try {
    const whole: number[] = [];
    for (let i = 0; i < WHOLE; i++) {
      const t = performance.now();
      const got = await fetchBytes(url, auth, 200);
      whole.push(performance.now() - t);
      if (!got.equals(bytes)) throw new Error(`${name}: whole download differs`);
    }
    const ranges: Record<string, number[]> = { '128KiB': [], '1MiB': [] };
    for (const [label, len] of [['128KiB', 128 * 1024], ['1MiB', 1024 * 1024]] as const) {
      for (const off of offsets) {
        const start = Math.min(off, bytes.length - len);
        const t = performance.now();
        const got = await fetchBytes(url, { ...auth, range: `bytes=${start}-${start + len - 1}` }, 206);
        ranges[label]!.push(performance.now() - t);
        if (!got.equals(bytes.subarray(start, start + len))) throw new Error(`${name}: range ${start}+${len} differs`);
      }
    }
    const w = stats(whole);
    const result = { putMs: r2(putMs), putMBps: r2(MB / (putMs / 1000)), wholeMs: w, wholeMBps: r2(MB / (w.median / 1000)), range128KiBMs: stats(ranges['128KiB']!), range1MiBMs: stats(ranges['1MiB']!) };
    log(`${name}: put ${result.putMs} ms, whole median ${w.median} ms (${result.wholeMBps} MB/s), 128 KiB range median ${result.range128KiBMs.median} ms, 1 MiB range median ${result.range1MiBMs.median} ms`);
    return result;
  } finally {
    await server.stop();
  }
}

async function main(): Promise<void> {
  if (await postgresSkipReason('the artifact bench')) process.exit(1);
  const dir = mkdtempSync(join(tmpdir(), 'apprentice-bench-artifacts-'));
  const tdb = await createThrowawayDb();
  const bytes = randomBytes(MB * 1024 * 1024);
  const file = join(dir, 'model.onnx');
  writeFileSync(file, bytes);
  // Same random offsets for both stores; every one crosses a 1 MiB chunk border or not, alike for both.
  const offsets = Array.from({ length: RANGES }, () => Math.floor(Math.random() * bytes.length));
  log(`${MB} MB artifact sha256 ${createHash('sha256').update(bytes).digest('hex').slice(0, 12)}…, ${WHOLE} whole downloads, ${RANGES} ranges of each size`);
  const sqlite = await openRegistry({ path: join(dir, 'file', 'registry.db') });
  const pgReg = await openRegistry({ url: tdb.url });
  try {
    const fileStore = await measure('file', sqlite, join(dir, 'file'), file, bytes, offsets);
    const registryStore = await measure('registry (PostgreSQL)', pgReg, join(dir, 'pg'), file, bytes, offsets);
    const ratio = {
      put: r2(registryStore.putMs / fileStore.putMs),
      wholeMedian: r2(registryStore.wholeMs.median / fileStore.wholeMs.median),
      range128KiBMedian: r2(registryStore.range128KiBMs.median / fileStore.range128KiBMs.median),
      range1MiBMedian: r2(registryStore.range1MiBMs.median / fileStore.range1MiBMs.median),
    };
    const out = writeBenchResult('artifacts', {
      artifactMB: MB,
      chunkBytes: 1024 * 1024,
      client: 'sequential fetch() from the bench process over loopback (shares the event loop with the server), admin bearer token',
      postgres: 'local PostgreSQL 15 on 127.0.0.1:5432, throwaway database',
      loadAverageAtEnd: loadavg().map((x) => r2(x)),
      file: fileStore,
      registry: registryStore,
      ratioRegistryOverFile: ratio,
    });
    const summary = `artifacts: ${MB} MB served over loopback, registry (PostgreSQL, 1 MiB chunks) vs file store: whole download ${registryStore.wholeMs.median} vs ${fileStore.wholeMs.median} ms (${ratio.wholeMedian}×), 1 MiB Range ${registryStore.range1MiBMs.median} vs ${fileStore.range1MiBMs.median} ms (${ratio.range1MiBMedian}×), 128 KiB Range ${registryStore.range128KiBMs.median} vs ${fileStore.range128KiBMs.median} ms (${ratio.range128KiBMedian}×), put ${registryStore.putMs} vs ${fileStore.putMs} ms`;
    console.log(summary);
    log(`wrote ${out}`);
  } finally {
    await sqlite.close();
    await pgReg.close();
    await tdb.drop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
