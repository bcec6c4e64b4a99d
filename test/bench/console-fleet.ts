/**
 * The fleet the console benches run on (issue 12): N devices in 10 groups over 3 releases (90% online, a
 * few degraded / dropping / trust_stale / rolled back), one live rollout over every device (1% failed,
 * 0.5% quarantined), 20 events per device, and full telemetry history (1,440 one-minute + 720 one-hour
 * buckets per device), written to a registry file on disk. Shared by console-data and console-ui.
 */
import { Registry } from '../../cloud/registry/db.js';

const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;
export const id = (i: number) => `dev-${String(i).padStart(5, '0')}`;
/** "Now" of the fleet: history ends here, the write phase runs after it. */
export const T0 = Date.parse('2026-11-30T12:00:00.000Z');

/** `history: false` leaves telemetry_history empty (for profiling the other queries). */
export function setup(path: string, N: number, history = true): { seconds: number; historyRows: number; bytes: number } {
  const t = performance.now();
  const reg = Registry.open(path);
  const db = reg.sqlite;
  const seen = new Date(T0 - 10_000).toISOString();
  const insDev = db.prepare(`INSERT INTO devices (id, groups, credential_hash, online, last_seen, running_seq, running_sha256, desired_seq, health, dropped_at, rolled_back_at, trust, degraded)
    VALUES (?, ?, 'x', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
  db.exec(`INSERT INTO models (name, input_spec, labels, teacher, student_spec, distill_settings) VALUES ('digits', '{}', '[]', '{}', 'mlp', '{}')`);
  const insRel = db.prepare(`INSERT INTO releases (model, seq, sha256, bytes, quantization, metrics, manifest, signature, artifact_path) VALUES ('digits', ?, ?, 1, 'int8', '{}', '{}', '{}', 'x')`);
  for (const seq of [1, 2, 3]) insRel.run(seq, String(seq).repeat(64));
  db.exec(`INSERT INTO rollouts (id, model, release_seq, target, canary_share, soak_seconds, failure_threshold, state) VALUES ('ro-1', 'digits', 3, '{"kind":"all"}', 0.1, 60, 0.2, 'fleet')`);
  const insRd = db.prepare(`INSERT INTO rollout_devices (rollout_id, device_id, canary, state, wave) VALUES ('ro-1', ?, ?, ?, ?)`);
  const insEv = db.prepare(`INSERT INTO device_events (device_id, at, received_at, source, type, release) VALUES (?, ?, ?, 'device', ?, ?)`);
  db.transaction(() => {
    for (let i = 0; i < N; i++) {
      const seq = 1 + (i % 3);
      const online = i % 10 !== 0;
      insDev.run(
        id(i),
        JSON.stringify([`group-${i % 10}`, ...(i % 7 === 0 ? ['eu'] : [])]),
        online ? 1 : 0,
        i % 97 === 0 ? null : seen,
        seq,
        String(seq).repeat(64),
        3,
        i % 50 === 1 ? 'degraded' : 'ok',
        i % 200 === 3 ? new Date(T0 - 60_000).toISOString() : null,
        i % 500 === 5 ? seen : null,
        JSON.stringify({ keysetVersion: 2, state: i % 300 === 7 ? 'trust_stale' : 'current' }),
        null,
      );
      insRd.run(id(i), i % 100 === 0 ? 1 : 0, i % 100 === 11 ? 'failed' : i % 200 === 13 ? 'quarantined' : seq === 3 ? 'installed' : 'desired', i % 100 === 0 ? 0 : 1);
      for (let e = 0; e < 20; e++) {
        const at = new Date(T0 - (20 - e) * 3600_000).toISOString();
        insEv.run(id(i), at, at, e % 2 ? 'committed' : 'installed', seq);
      }
    }
  })();
  // Full history, generated inside SQLite. The bucket index is built after the fill (a sort, not 21 M random inserts).
  db.exec('DROP INDEX telemetry_history_bucket_idx');
  const m1 = Math.floor(T0 / 1000 / 60) * 60;
  const h1 = Math.floor(T0 / 1000 / 3600) * 3600;
  const fill = db.prepare(`WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < ? - 1)
    INSERT INTO telemetry_history (device_id, resolution, bucket, samples, latency_p50, latency_samples, latency_p95, requests, errors, rss_bytes, outbox_depth, outbox_dropped)
    SELECT d.id, ?, ? - (? - 1 - k.i) * ?, 2, 1.5 + (k.i % 7) * 0.1, 2, 4.0 + (k.i % 5), 40 + k.i % 13, 0, 50000000 + k.i * 1000, k.i % 4, 0
    FROM (SELECT id FROM devices WHERE id >= ? AND id < ? ORDER BY id) d, k`);
  const CHUNK = 250;
  for (let i = 0; history && i < N; i += CHUNK) {
    const lo = id(i);
    const hi = i + CHUNK >= N ? '~' : id(i + CHUNK);
    db.transaction(() => {
      fill.run(1440, '1m', m1, 1440, 60, lo, hi);
      fill.run(720, '1h', h1, 720, 3600, lo, hi);
    })();
  }
  db.exec('CREATE INDEX telemetry_history_bucket_idx ON telemetry_history (resolution, bucket)');
  const historyRows = (db.prepare('SELECT count(*) AS n FROM telemetry_history').get() as { n: number }).n;
  db.pragma('wal_checkpoint(TRUNCATE)');
  const pages = db.pragma('page_count', { simple: true }) as number;
  const pageSize = db.pragma('page_size', { simple: true }) as number;
  reg.dispose();
  return { seconds: round((performance.now() - t) / 1000, 1), historyRows, bytes: pages * pageSize };
}

