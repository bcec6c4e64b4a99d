import { Gauge, type Registry } from 'prom-client';
import type { Outbox, OutboxWriter, SourceImages } from '../outbox/index.js';
import type { Selector } from '../selection/index.js';

/**
 * Prometheus gauges for the hard-example path, read at scrape time (prom-client `collect`), so the
 * outbox and selector keep their own counters and nothing is double-counted.
 */
export function registerHardExampleMetrics(
  registry: Registry,
  { outbox, writer, selector, sources }: { outbox: () => Outbox; writer?: () => OutboxWriter; selector: Selector; sources?: () => SourceImages },
): void {
  statGauge(registry, 'apprentice_edge_outbox', 'Outbox state: depth (rows), bytes, and lifetime selected/published/evicted/dropped counts', () => outbox().stats());
  if (writer) {
    const help = 'Outbox writer: queued examples (pending), committed batches and examples, and examples refused (queueFull, invalid) or lost to failed commits (writeFailed, failedBatches)';
    statGauge(registry, 'apprentice_edge_outbox_writer', help, () => writer().stats());
  }
  if (sources) {
    statGauge(registry, 'apprentice_edge_source_images', 'Source images of hard examples (image models, issue 11): attached, omitted as over outbox.sourceImageMaxBytes (tooLarge), or not re-encodable (failed)', () => sources().stats());
  }
  new Gauge({
    name: 'apprentice_edge_selection',
    help: 'Hard-example selector decisions since start, by outcome (selected, capped, duplicate) and reason',
    labelNames: ['outcome', 'reason'] as const,
    registers: [registry],
    collect() {
      const c = selector.counters();
      for (const outcome of ['selected', 'capped', 'duplicate'] as const) for (const [reason, v] of Object.entries(c[outcome])) this.set({ outcome, reason }, v);
    },
  });
}

/** One gauge with a `stat` label per field of a stats snapshot, read at scrape time. */
function statGauge(registry: Registry, name: string, help: string, stats: () => object): void {
  new Gauge({
    name,
    help,
    labelNames: ['stat'] as const,
    registers: [registry],
    collect() {
      for (const [k, v] of Object.entries(stats())) if (typeof v === 'number') this.set({ stat: k }, v);
    },
  });
}
