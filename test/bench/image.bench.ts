/**
 * `npm run bench:image` (issue 11): what image inputs cost the edge. For each image size, a fresh
 * child process (so RSS is its own) measures: RSS before sharp is imported (the API and ORT loaded,
 * as in the daemon), after the lazy import, the peak while preprocessing the same image repeatedly
 * (decode, grey/RGB, resize to the model's H×W, normalise) with cache off and one libvips thread,
 * and after; plus the per-image latency. Each with glibc's default malloc arenas and with
 * MALLOC_ARENA_MAX=2. Writes test/bench/results/image.json.
 */
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeBenchResult } from './common.js';

const SELF = fileURLToPath(import.meta.url);
const MB = 1024 * 1024;
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
const QUICK = process.env.BENCH_QUICK === '1';
const SPEC = { height: 224, width: 224, channels: 3, layout: 'nchw', mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] } as const;

interface Scenario {
  name: string;
  format: 'jpeg' | 'png';
  width: number;
  height: number;
}
const SCENARIOS: Scenario[] = [
  { name: 'jpeg 640×480', format: 'jpeg', width: 640, height: 480 },
  { name: 'jpeg 1920×1080', format: 'jpeg', width: 1920, height: 1080 },
  { name: 'png 1920×1080', format: 'png', width: 1920, height: 1080 },
  { name: 'jpeg 4608×2592 (12 MP, Pi Camera 3)', format: 'jpeg', width: 4608, height: 2592 },
];

async function child(file: string, iterations: number): Promise<void> {
  // What the daemon has loaded before the first image arrives.
  await import('onnxruntime-node');
  await import('../../edge/api/app.js');
  const { readFileSync } = await import('node:fs');
  const bytes = new Uint8Array(readFileSync(file));
  global.gc?.();
  const rssBase = process.memoryUsage.rss();
  const pre = await import('../../shared/image/preprocess.js');
  await pre.loadSharp();
  const rssImported = process.memoryUsage.rss();
  let peak = rssImported;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 5);
  const times: number[] = [];
  for (let i = 0; i < iterations; i++) {
    const t = performance.now();
    await pre.preprocessImage(bytes, { ...SPEC, mean: [...SPEC.mean], std: [...SPEC.std] }, { maxPixels: 12_000_000 });
    times.push(performance.now() - t);
    peak = Math.max(peak, process.memoryUsage.rss());
  }
  clearInterval(timer);
  global.gc?.();
  await new Promise((r) => setTimeout(r, 200));
  const rssAfter = process.memoryUsage.rss();
  times.sort((a, b) => a - b);
  process.stdout.write(
    JSON.stringify({
      rssBaseMB: round(rssBase / MB),
      rssAfterImportMB: round(rssImported / MB),
      importCostMB: round((rssImported - rssBase) / MB),
      rssPeakMB: round(peak / MB),
      peakOverBaseMB: round((peak - rssBase) / MB),
      rssAfterMB: round(rssAfter / MB),
      iterations,
      p50Ms: round(times[Math.floor(times.length / 2)]!, 2),
      maxMs: round(times[times.length - 1]!, 2),
    }) + '\n',
  );
}

function runChild(file: string, iterations: number, env: Record<string, string>): Promise<Record<string, unknown>> {
  return new Promise((res, rej) => {
    const cp = spawn(process.execPath, ['--expose-gc', SELF, '--child', file, String(iterations)], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
    let out = '';
    cp.stdout.on('data', (d) => (out += d));
    cp.on('exit', (code) => (code === 0 ? res(JSON.parse(out) as Record<string, unknown>) : rej(new Error(`image bench child exited with ${code}`))));
  });
}

async function main(): Promise<void> {
  const sharp = (await import('sharp')).default;
  const dir = mkdtempSync(join(tmpdir(), 'apprentice-image-bench-'));
  const iterations = QUICK ? 5 : 100;
  // glibc gives each libvips worker thread its own malloc arena; capping them shows how much of the
  // growth is arena fragmentation rather than live memory.
  const envs: Record<string, string>[] = [{}, { MALLOC_ARENA_MAX: '2' }];
  const results = [];
  try {
    for (const s of SCENARIOS) {
      // A smooth gradient plus noise: compresses like a photo, not like a flat colour.
      const raw = Buffer.alloc(s.width * s.height * 3);
      let seed = 7;
      for (let i = 0; i < raw.length; i++) {
        seed = (seed * 1103515245 + 12345) >>> 0;
        const p = Math.floor(i / 3);
        raw[i] = (((p % s.width) * 255) / s.width + ((seed >>> 24) & 31)) & 255;
      }
      const img = sharp(raw, { raw: { width: s.width, height: s.height, channels: 3 } });
      const bytes = await (s.format === 'jpeg' ? img.jpeg({ quality: 85 }) : img.png()).toBuffer();
      const file = join(dir, `${s.width}x${s.height}.${s.format}`);
      writeFileSync(file, bytes);
      for (const env of envs) {
        const r = await runChild(file, iterations, env);
        console.error(`[image.bench] ${s.name} (${round(bytes.length / 1024, 0)} KiB) ${JSON.stringify(env)}: ${JSON.stringify(r)}`);
        results.push({ scenario: s.name, bytes: bytes.length, env, ...r });
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const file = writeBenchResult('image', {
    quick: QUICK,
    target: SPEC,
    sharp: { version: sharp.versions.sharp, libvips: sharp.versions.vips, cache: false, concurrency: 1 },
    note: 'per scenario a fresh process: RSS with ORT and the local API loaded, after importing sharp, peak while preprocessing the image repeatedly, and after',
    results,
  });
  console.error(`[image.bench] wrote ${file}`);
}

if (process.argv[2] === '--child') await child(process.argv[3]!, Number(process.argv[4]));
else await main();
