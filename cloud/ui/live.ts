import type { Context } from 'hono';
import { streamSSE } from 'hono/streaming';
import type { Logger } from '../../shared/log/index.js';

type Listener = (html: string) => void;

interface Topic {
  render: () => Promise<string>;
  listeners: Set<Listener>;
  last?: string;
}

/**
 * Live fragments for server-sent events. One timer per server, not one loop per browser tab: each tick
 * renders every watched topic once (e.g. one rollout's progress, read from the registry through the
 * API) and pushes it to that topic's listeners only when it changed. Reading the registry, not an
 * in-process event, is what lets any replica serve the stream. The timer runs only while someone listens.
 */
export class LiveHub {
  private readonly topics = new Map<string, Topic>();
  private timer: NodeJS.Timeout | undefined;
  private busy = false;

  constructor(private readonly deps: { intervalMs?: number; log: Logger }) {}

  /** Starts sending `render()` to `listener` (at once, then on change); the returned function stops it. */
  subscribe(key: string, render: () => Promise<string>, listener: Listener): () => void {
    let t = this.topics.get(key);
    if (!t) this.topics.set(key, (t = { render, listeners: new Set() }));
    t.listeners.add(listener);
    if (t.last !== undefined) listener(t.last);
    this.timer ??= setInterval(() => void this.tick(), this.deps.intervalMs ?? 1000);
    void this.tick();
    return () => {
      t.listeners.delete(listener);
      if (t.listeners.size === 0) this.topics.delete(key);
      if (this.topics.size === 0) this.stop();
    };
  }

  get listeners(): number {
    let n = 0;
    for (const t of this.topics.values()) n += t.listeners.size;
    return n;
  }

  async tick(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      for (const [key, t] of this.topics) {
        try {
          const html = await t.render();
          if (html === t.last) continue;
          t.last = html;
          for (const l of t.listeners) l(html);
        } catch (err) {
          this.deps.log.error({ err, key }, 'ui/live render failed');
        }
      }
    } finally {
      this.busy = false;
    }
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}

/**
 * Streams one live topic to a browser as server-sent events (`event`, default `progress`), from the
 * shared hub: the first fragment at once, then each change. The stream outlives page loads, so it ends
 * when its session expires or logs out (checked before every message) or when the browser goes away.
 *
 * @example
 * return liveStream(c, { hub: ctx.live, key: `round:${id}:${s.sid}`, render, stillValid: () => ctx.sessionLive(s) });
 */
export function liveStream(c: Context, o: { hub: LiveHub; key: string; render: () => Promise<string>; stillValid: () => Promise<boolean>; event?: string }): Response {
  return streamSSE(c, async (stream) => {
    let n = 0;
    const queue: string[] = [];
    let wake: (() => void) | undefined;
    const off = o.hub.subscribe(o.key, o.render, (html) => {
      queue.push(html);
      wake?.();
    });
    stream.onAbort(() => {
      off();
      wake?.();
    });
    try {
      while (!stream.aborted) {
        if (queue.length && !(await o.stillValid())) break;
        while (queue.length) await stream.writeSSE({ event: o.event ?? 'progress', data: queue.shift()!, id: String(++n) });
        await new Promise<void>((r) => (wake = r));
      }
    } finally {
      off();
    }
  });
}
