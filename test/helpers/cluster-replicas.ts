/**
 * Stand-in cloud replicas for the cluster tests and the takeover bench: each a `node --import tsx`
 * process running cluster-replica-process.ts (a LeaderElector with default timings plus a fenced write
 * every 100 ms while leader), whose JSON event lines are collected here.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const SCRIPT = path.join(here, 'cluster-replica-process.ts');
const ROOT = path.resolve(here, '../..');

export interface Ev {
  ev: string;
  name: string;
  t: number;
  epoch?: number;
  reason?: string;
  currentEpoch?: number | null;
  err?: string;
}

export class Replica {
  readonly events: Ev[] = [];
  private waiters: { pred: (e: Ev) => boolean; resolve: (e: Ev) => void }[] = [];
  readonly child: ChildProcess;
  stderr = '';

  /** `script` (default cluster-replica-process.ts) runs with `<url> <name> ...args`. */
  constructor(
    readonly name: string,
    url: string,
    { script = SCRIPT, args = [] }: { script?: string; args?: string[] } = {},
  ) {
    this.child = spawn(process.execPath, ['--import', 'tsx', script, url, name, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      const e = JSON.parse(line) as Ev;
      this.events.push(e);
      this.waiters = this.waiters.filter((w) => (w.pred(e) ? (w.resolve(e), false) : true));
    });
  }

  /** The first event (already seen or to come) matching `pred`. */
  next(pred: (e: Ev) => boolean, timeoutMs: number, what: string): Promise<Ev> {
    const seen = this.events.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name}: no ${what} within ${timeoutMs} ms; events ${JSON.stringify(this.events)}; stderr ${this.stderr.slice(-2000)}`)), timeoutMs);
      this.waiters.push({ pred, resolve: (e) => (clearTimeout(timer), resolve(e)) });
    });
  }

  leaderEvents(): Ev[] {
    return this.events.filter((e) => e.ev === 'leader');
  }

  signal(sig: NodeJS.Signals): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(sig);
  }
}

/** The first of `replicas` to report leadership with an epoch above `above`. */
export function nextLeader(replicas: Replica[], above: number, timeoutMs: number): Promise<{ r: Replica; e: Ev }> {
  return Promise.race(replicas.map((r) => r.next((e) => e.ev === 'leader' && (e.epoch ?? 0) > above, timeoutMs, `leader above epoch ${above}`).then((e) => ({ r, e }))));
}

