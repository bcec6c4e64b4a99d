import { Hono } from 'hono';
import { collectDefaultMetrics, Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { LoadedModel } from '../runtime/host.js';
import { methodNotAllowed } from './errors.js';

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/** Reuses a metric already registered under `name` (a second API on the same registry), else creates it. */
function metric<T>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

export interface ApiMetricsOptions {
  registry: Registry;
  /** Read at scrape time for the model gauges. */
  current: () => LoadedModel | undefined;
  /** Paths reported as their own `route` label; anything else is 'other' (bounded cardinality). */
  routes: readonly string[];
  /** Also register prom-client's default process metrics (skipped when already present). */
  defaultMetrics?: boolean;
}

/**
 * The local API's Prometheus metrics. Label children are cached per label combination: prom-client
 * hashes the label object on every `inc()` otherwise, a measurable cost at 10k requests/s.
 */
export class ApiMetrics {
  private readonly requests: Counter<'route' | 'method' | 'status'>;
  private readonly duration: Histogram<'route'>;
  private readonly predictions: Counter;
  private readonly inferenceSeconds: Counter;
  private readonly feedbackTotal: Counter<'stored'>;
  private readonly imagesTotal: Counter<'outcome'>;
  private readonly refusedTotal: Counter<'reason'>;
  private readonly children = new Map<string, { inc(): void }>();
  private readonly durations = new Map<string, { observe(v: number): void }>();
  private readonly routes: Set<string>;

  constructor({ registry, current, routes, defaultMetrics = true }: ApiMetricsOptions) {
    const registers = [registry];
    this.routes = new Set(routes);
    this.requests = metric(registry, 'apprentice_edge_http_requests_total', () => new Counter({ name: 'apprentice_edge_http_requests_total', help: 'HTTP requests by route, method and status', labelNames: ['route', 'method', 'status'] as const, registers }));
    this.duration = metric(registry, 'apprentice_edge_http_request_duration_seconds', () => new Histogram({ name: 'apprentice_edge_http_request_duration_seconds', help: 'HTTP request handling time', labelNames: ['route'] as const, buckets: [0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1], registers }));
    this.predictions = metric(registry, 'apprentice_edge_predictions_total', () => new Counter({ name: 'apprentice_edge_predictions_total', help: 'Examples predicted', registers }));
    // A counter, not a histogram: the HTTP histogram already has the latency distribution, and this sum
    // (÷ predictions) gives the mean time in ORT at a tenth of a histogram's per-request cost.
    this.inferenceSeconds = metric(registry, 'apprentice_edge_inference_seconds_total', () => new Counter({ name: 'apprentice_edge_inference_seconds_total', help: 'Time spent in ORT runs, summed per request (a shared batched run counts for each request in it)', registers }));
    this.feedbackTotal = metric(registry, 'apprentice_edge_feedback_total', () => new Counter({ name: 'apprentice_edge_feedback_total', help: 'Feedback labels received, by whether the outbox stored them', labelNames: ['stored'] as const, registers }));
    this.imagesTotal = metric(registry, 'apprentice_edge_images_total', () => new Counter({ name: 'apprentice_edge_images_total', help: 'PNG/JPEG inputs by outcome: decoded, or the reason they were refused (wrong_type, undecodable, too_many_pixels)', labelNames: ['outcome'] as const, registers }));
    this.refusedTotal = metric(registry, 'apprentice_edge_refused_total', () => new Counter({ name: 'apprentice_edge_refused_total', help: 'Requests (predict: examples) refused by a bound: out_of_range (manifest input.range), feedback_rate (per-minute feedback cap), unauthorized (API token), busy (api.maxConcurrent requests already in progress: 503)', labelNames: ['reason'] as const, registers }));
    metric(registry, 'apprentice_edge_model_release', () => new Gauge({
      name: 'apprentice_edge_model_release',
      help: 'Release sequence of the model being served (absent when none is loaded)',
      labelNames: ['model', 'sha256'] as const,
      registers,
      collect() {
        this.reset();
        const m = current();
        if (m) this.set({ model: m.manifest.model, sha256: m.sha256 }, m.manifest.release);
      },
    }));
    metric(registry, 'apprentice_edge_model_loaded', () => new Gauge({
      name: 'apprentice_edge_model_loaded',
      help: '1 when a model is loaded and predictions are served',
      registers,
      collect() {
        this.set(current() ? 1 : 0);
      },
    }));
    if (defaultMetrics && !registry.getSingleMetric('process_cpu_user_seconds_total')) collectDefaultMetrics({ register: registry });
  }

  route(path: string): string {
    return this.routes.has(path) ? path : 'other';
  }

  request(path: string, method: string, status: number, seconds: number): void {
    const route = this.route(path);
    const m = KNOWN_METHODS.has(method) ? method : 'OTHER';
    const key = `${route} ${m} ${status}`;
    let child = this.children.get(key);
    if (!child) {
      child = this.requests.labels(route, m, String(status));
      this.children.set(key, child);
    }
    child.inc();
    let d = this.durations.get(route);
    if (!d) {
      d = this.duration.labels(route);
      this.durations.set(route, d);
    }
    d.observe(seconds);
  }

  predicted(n: number, inferenceMs: number): void {
    this.predictions.inc(n);
    this.inferenceSeconds.inc(inferenceMs / 1000);
  }

  /** An image input: 'decoded', or the ImageError code it was refused with. */
  image(outcome: string): void {
    this.imagesTotal.inc({ outcome });
  }

  /** Examples with a value outside the manifest's input range (refused before the model). */
  outOfRange(n: number): void {
    this.refusedTotal.inc({ reason: 'out_of_range' }, n);
  }

  /** A request refused by a bound other than the input range. */
  refused(reason: 'feedback_rate' | 'unauthorized' | 'busy'): void {
    this.refusedTotal.inc({ reason });
  }

  feedback(stored: boolean): void {
    this.feedbackTotal.inc({ stored: stored ? 'true' : 'false' });
  }
}

/** `GET /metrics`: Prometheus text exposition of the whole registry. */
export function metricsRoutes({ registry }: { registry: Registry }): Hono {
  return new Hono()
    .get('/', async (c) => {
      const text = await registry.metrics();
      return c.body(text, 200, { 'Content-Type': registry.contentType });
    })
    .all('/', methodNotAllowed(['GET']));
}
