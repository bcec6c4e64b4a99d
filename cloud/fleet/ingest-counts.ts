import { inArray, sql } from 'drizzle-orm';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import type { StoreRegistry } from '../registry/open.js';
import { q } from '../registry/tx.js';

/** Per-device example outcomes other than stored (shown in /v1/examples/stats), kept across restarts. */
export interface DeviceIngestCounts {
  /** Examples deferred by the rate cap (the device sends them again later). */
  deferred: number;
  /** Examples or unreadable batches refused for good (malformed, oversized, revoked, ...). */
  refused: number;
  /** Labels dropped because the example was not a `feedback` row. */
  labelsIgnored: number;
}

/** Per-device counts kept for at most this many devices; the rest are summed under `OTHER_DEVICES`. */
export const MAX_COUNTED_DEVICES = 10_000;
export const OTHER_DEVICES = '(other)';

const zero = (): DeviceIngestCounts => ({ deferred: 0, refused: 0, labelsIgnored: 0 });

// --- store (issue 10: durable per-device ingest counts) ---------------------------------------------

/** Every device's persisted counts. */
export async function loadIngestCounts(registry: StoreRegistry): Promise<Map<string, DeviceIngestCounts>> {
  const rows = await registry.q.select().from(registry.t.deviceIngestCounts);
  return new Map(rows.map((r) => [r.deviceId, { deferred: r.deferred, refused: r.refused, labelsIgnored: r.labelsIgnored }]));
}

/** Adds `deltas` to the persisted counts, in one transaction. */
export async function addIngestCounts(registry: StoreRegistry, deltas: ReadonlyMap<string, DeviceIngestCounts>, now: Date): Promise<void> {
  if (deltas.size === 0) return;
  const at = now.toISOString();
  await registry.tx(function* (tx, { deviceIngestCounts }) {
    for (const [deviceId, d] of deltas) {
      yield* q(
        tx
          .insert(deviceIngestCounts)
        .values({ deviceId, ...d, updatedAt: at })
        .onConflictDoUpdate({
          target: deviceIngestCounts.deviceId,
          set: {
            deferred: sql`${deviceIngestCounts.deferred} + ${d.deferred}`,
            refused: sql`${deviceIngestCounts.refused} + ${d.refused}`,
            labelsIgnored: sql`${deviceIngestCounts.labelsIgnored} + ${d.labelsIgnored}`,
            updatedAt: at,
          },
        }),
      );
    }
  });
}

/** Of these example ids, the ones already stored (a redelivered batch: not charged against the rate cap). */
export async function storedExampleIds(registry: StoreRegistry, ids: readonly string[]): Promise<Set<string>> {
  const out = new Set<string>();
  const { examples } = registry.t;
  // SQLite's bound-parameter limit is 32,766; a batch holds at most 256 examples.
  for (let i = 0; i < ids.length; i += 500) {
    const part = ids.slice(i, i + 500);
    for (const r of await registry.q.select({ id: examples.id }).from(examples).where(inArray(examples.id, part))) out.add(r.id);
  }
  return out;
}

// --- the counts ingest keeps --------------------------------------------------------------------------

/**
 * Ingest's per-device counts: read from the registry at start, added to in memory, and written back as
 * deltas every `flushMs` and at stop. A crash loses at most the last `flushMs` of counts (they are
 * statistics, not data: nothing is acknowledged on them).
 */
export class IngestCounts {
  private readonly counts = new Map<string, DeviceIngestCounts>();
  private dirty = new Map<string, DeviceIngestCounts>();
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();
  private readonly log: Logger;

  constructor(private readonly deps: { registry: StoreRegistry; now: () => Date; flushMs?: number; log?: Logger }) {
    this.log = deps.log ?? silentLogger;
  }

  async load(): Promise<void> {
    for (const [id, c] of await loadIngestCounts(this.deps.registry)) this.counts.set(id, c);
  }

  add(deviceId: string, what: keyof DeviceIngestCounts, n: number): void {
    if (n <= 0) return;
    const key = this.counts.has(deviceId) || this.counts.size < MAX_COUNTED_DEVICES ? deviceId : OTHER_DEVICES;
    for (const m of [this.counts, this.dirty]) {
      let c = m.get(key);
      if (!c) m.set(key, (c = zero()));
      c[what] += n;
    }
    this.timer ??= setTimeout(() => void this.flush(), this.deps.flushMs ?? 1_000);
    this.timer.unref?.();
  }

  snapshot(): Record<string, DeviceIngestCounts> {
    return Object.fromEntries([...this.counts].map(([id, c]) => [id, { ...c }]));
  }

  /** Writes the deltas so far; a failed write keeps them for the next flush. */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const deltas = this.dirty;
    if (deltas.size === 0) return this.writing;
    this.dirty = new Map();
    this.writing = this.writing
      .then(() => addIngestCounts(this.deps.registry, deltas, this.deps.now()))
      .catch((err: unknown) => {
        this.log.error({ err, devices: deltas.size }, 'ingest/counts-write-failed: kept for the next flush');
        for (const [id, d] of deltas) {
          const c = this.dirty.get(id) ?? zero();
          this.dirty.set(id, { deferred: c.deferred + d.deferred, refused: c.refused + d.refused, labelsIgnored: c.labelsIgnored + d.labelsIgnored });
        }
        this.timer ??= setTimeout(() => void this.flush(), this.deps.flushMs ?? 1_000);
        this.timer.unref?.();
      });
    return this.writing;
  }
}
