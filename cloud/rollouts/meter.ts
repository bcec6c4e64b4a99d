import { Counter, type Registry as PromRegistry } from 'prom-client';

/** What the engine did with a device signal (the events counter's `kind`). */
export type EngineEventKind = 'status' | 'telemetry' | 'event';

/**
 * The rollout engine's own CPU time (issue 8, "engine CPU per device event"): `process.cpuUsage()`
 * deltas over the stretches where engine code runs, in `apprentice_rollout_engine_cpu_seconds_total`,
 * beside the device signals it handled in `apprentice_rollout_engine_events_total`. The bench divides
 * one by the other.
 *
 * A queued engine task awaits MQTT publishes; while it waits, other code (ingest, the API) runs and must
 * not be counted. So the meter runs from a task's start, stops once the task has handed a publish to the
 * publisher (`pauseSoon`: after the current synchronous stretch, so the other workers of a `mapLimit`
 * started in it are counted) and starts again when the publish settles (`resume`). Signal handlers are
 * synchronous and measured whole (`sync`). What it leaves out: the publisher's work after its first
 * await (MQTT encoding of chunks, PUBACK handling), which is the broker client's, not the engine's.
 */
export class EngineCpuMeter {
  private readonly cpu: Counter<'part'>;
  private readonly events: Counter<'kind'>;
  private started: NodeJS.CpuUsage | null = null;
  private epoch = 0;

  constructor(metrics?: PromRegistry) {
    const registers = metrics ? [metrics] : [];
    this.cpu = new Counter({ name: 'apprentice_rollout_engine_cpu_seconds_total', help: 'CPU seconds (user + system) spent in rollout engine code: signal handlers and queued steps, not the waits on publishes', labelNames: ['part'] as const, registers });
    this.events = new Counter({ name: 'apprentice_rollout_engine_events_total', help: 'Device signals (status, telemetry, events) the rollout engine handled', labelNames: ['kind'] as const, registers });
  }

  /** A device signal reached the engine. */
  event(kind: EngineEventKind): void {
    this.events.inc({ kind });
  }

  /** Runs a synchronous signal handler, metered (inside a running task it is already counted). */
  sync<T>(fn: () => T): T {
    if (this.started) return fn();
    const t0 = process.cpuUsage();
    try {
      return fn();
    } finally {
      this.add('signal', process.cpuUsage(t0));
    }
  }

  /** Engine code starts or continues (a task starts, a publish it awaited settled). */
  resume(): void {
    this.epoch++;
    this.started ??= process.cpuUsage();
  }

  /** Engine code is about to wait: stop after the current synchronous stretch, unless it resumes first. */
  pauseSoon(): void {
    const e = this.epoch;
    queueMicrotask(() => {
      if (e === this.epoch) this.pauseNow();
    });
  }

  pauseNow(): void {
    if (!this.started) return;
    this.add('step', process.cpuUsage(this.started));
    this.started = null;
  }

  /** Pauses until `p` settles (a publish or re-issue the engine awaits). */
  waitOn<T>(p: Promise<T>): Promise<T> {
    this.pauseSoon();
    return p.then(
      (v) => {
        this.resume();
        return v;
      },
      (err: unknown) => {
        this.resume();
        throw err;
      },
    );
  }

  /** `target` with every method that returns a promise metered by `waitOn`. */
  wrap<T extends object>(target: T): T {
    return new Proxy(target, {
      get: (t, key, receiver) => {
        const v = Reflect.get(t, key, receiver) as unknown;
        if (typeof v !== 'function') return v;
        return (...args: unknown[]) => {
          const out = (v as (...a: unknown[]) => unknown).apply(t, args);
          return out instanceof Promise ? this.waitOn(out) : out;
        };
      },
    });
  }

  private add(part: 'signal' | 'step', d: NodeJS.CpuUsage): void {
    this.cpu.inc({ part }, (d.user + d.system) / 1e6);
  }
}
