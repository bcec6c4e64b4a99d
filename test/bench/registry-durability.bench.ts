/**
 * Registry durability bench (issue 9): what `synchronous=FULL` costs, and what batching the device
 * status/telemetry writes buys back.
 *
 *   npm run build && node dist/test/bench/registry-durability.bench.js [--tx 300] [--devices 3000]
 *
 * Writes test/bench/results/registry-durability.json.
 *
 * 1. Example rows: the real ingest statement, 64 rows per transaction (one MQTT batch per commit, as
 *    ingest now commits), with `synchronous` NORMAL vs FULL on the same disk.
 * 2. Telemetry: `devices` telemetry updates, one transaction per message (the old path) under NORMAL
 *    and FULL, against `DeviceStateWriter` (the new path) flushing 333 ops per transaction (one second
 *    of a 10,000-device fleet at 30 s telemetry). Reported as writes/s each path sustains.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { DeviceStateWriter } from '../../cloud/fleet/device-state-writer.js';
import { Registry } from '../../cloud/registry/db.js';
import { devices } from '../../cloud/registry/schema.js';
import type { Telemetry } from '../../shared/protocol/index.js';
import { writeBenchResult } from './common.js';

const BATCH = 64;
const FEATURES = 784;

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;

function open(mode: 'NORMAL' | 'FULL', nDevices: number): { registry: Registry; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), `registry-bench-${mode}-`));
  const registry = Registry.open(join(dir, 'registry.db'));
  registry.sqlite.pragma(`synchronous = ${mode}`);
  const ids = Array.from({ length: nDevices }, (_, i) => `bench-${i}`);
  for (let i = 0; i < ids.length; i += 500) registry.db.insert(devices).values(ids.slice(i, i + 500).map((id) => ({ id, groups: ['bench'], credentialHash: 'x' }))).run();
  return { registry, dir };
}

function exampleRows(registry: Registry, txs: number): { transactions: number; rows: number; seconds: number; rowsPerSec: number; txPerSec: number } {
  const stmt = registry.sqlite.prepare(`INSERT INTO examples (id, device_id, model, release_seq, input, student_output, reason, label, captured_at, ingested_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING`);
  const input = Buffer.from(Float32Array.from({ length: FEATURES }, (_, j) => (j % 255) / 255).buffer);
  const output = JSON.stringify([0.05, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.15, 0.15]);
  const tx = registry.sqlite.transaction(() => {
    const at = new Date().toISOString();
    for (let i = 0; i < BATCH; i++) stmt.run(randomUUID(), 'bench-0', 'mnist', 1, input, output, 'low_margin', null, at, at);
  });
  for (let i = 0; i < 20; i++) tx(); // warm-up
  const t0 = performance.now();
  for (let i = 0; i < txs; i++) tx();
  const seconds = (performance.now() - t0) / 1000;
  return { transactions: txs, rows: txs * BATCH, seconds: round(seconds, 3), rowsPerSec: Math.round((txs * BATCH) / seconds), txPerSec: Math.round(txs / seconds) };
}

function telemetry(deviceId: string): Telemetry {
  return { v: 1, deviceId, at: new Date().toISOString(), model: 'mnist', release: 1, uptimeSeconds: 100, requests: 10, errors: 0, latencyMs: { p50: 1, p95: 2 }, rssBytes: 1e8, outbox: { depth: 0, bytes: 0, dropped: 0, evicted: 0, selected: 0, published: 0 }, health: 'ok' };
}

function perMessage(registry: Registry, n: number): { writes: number; seconds: number; writesPerSec: number } {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const id = `bench-${i}`;
    const t = telemetry(id);
    registry.db.update(devices).set({ lastTelemetry: t, lastSeen: t.at }).where(eq(devices.id, id)).run();
  }
  const seconds = (performance.now() - t0) / 1000;
  return { writes: n, seconds: round(seconds, 3), writesPerSec: Math.round(n / seconds) };
}

function batched(registry: Registry, n: number, perTx: number): { writes: number; opsPerTransaction: number; seconds: number; writesPerSec: number } {
  const writer = new DeviceStateWriter({ registry, flushMs: 3_600_000, maxQueued: perTx });
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const t = telemetry(`bench-${i}`);
    writer.push({ kind: 'telemetry', deviceId: t.deviceId, telemetry: t, lastSeen: t.at });
  }
  writer.stop();
  const seconds = (performance.now() - t0) / 1000;
  return { writes: n, opsPerTransaction: perTx, seconds: round(seconds, 3), writesPerSec: Math.round(n / seconds) };
}

function main(): void {
  const txs = arg('tx', 300);
  const nDevices = arg('devices', 3000);
  const out: Record<string, unknown> = { config: { exampleTransactions: txs, rowsPerTransaction: BATCH, inputFloats: FEATURES, telemetryWrites: nDevices, batchedOpsPerTransaction: 333 } };
  const examples: Record<string, unknown> = {};
  const tel: Record<string, unknown> = {};
  for (const mode of ['NORMAL', 'FULL'] as const) {
    const { registry, dir } = open(mode, nDevices);
    try {
      examples[mode] = exampleRows(registry, txs);
      tel[`perMessage${mode}`] = perMessage(registry, nDevices);
      if (mode === 'FULL') tel.batchedFULL = batched(registry, nDevices, 333);
    } finally {
      registry.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  }
  const ex = examples as Record<'NORMAL' | 'FULL', { rowsPerSec: number }>;
  const t = tel as Record<'perMessageNORMAL' | 'perMessageFULL' | 'batchedFULL', { writesPerSec: number }>;
  out.examples = { ...examples, fullVsNormal: round(ex.FULL.rowsPerSec / ex.NORMAL.rowsPerSec, 3) };
  out.telemetry = { ...tel, neededFor10kDevicesAt30s: 333, batchedVsPerMessageFULL: round(t.batchedFULL.writesPerSec / t.perMessageFULL.writesPerSec, 1) };
  const file = writeBenchResult('registry-durability', out);
  console.log(
    `registry-durability: example rows ${ex.NORMAL.rowsPerSec}/s NORMAL vs ${ex.FULL.rowsPerSec}/s FULL (64/tx); telemetry writes/s per message ${t.perMessageNORMAL.writesPerSec} NORMAL, ${t.perMessageFULL.writesPerSec} FULL, batched FULL ${t.batchedFULL.writesPerSec} (need 333) → ${file}`,
  );
}

main();
