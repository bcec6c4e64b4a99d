import type { Manifest } from '../../shared/protocol/index.js';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import { ModelHost, ModelSession, type InferenceRunner, type ModelSessionOptions } from '../runtime/index.js';

/** How far a faulty simulated device's outputs are off: far beyond any self-test tolerance. */
export const FAULT_OFFSET = 1000;

/**
 * ORT sessions shared by the simulated devices of one process, one per artifact sha256 with a
 * reference count (issue 5: "devices in one process may share a loaded ORT session per artifact hash;
 * only that may be shared"). Each device still runs the real edge/runtime `ModelHost` (self-test,
 * atomic switch, release of the old session); only the session factory is this cache, and a device's
 * `dispose()` of a session drops one reference. The last reference releases the native session.
 */
export class SharedSessions {
  private readonly entries = new Map<string, { session: Promise<ModelSession>; refs: number }>();
  private opened = 0;

  constructor(
    private readonly options: ModelSessionOptions = {},
    private readonly log: Logger = silentLogger,
  ) {}

  /** Live sessions and references, for progress output and tests. */
  stats(): { sessions: number; refs: number; opened: number } {
    let refs = 0;
    for (const e of this.entries.values()) refs += e.refs;
    return { sessions: this.entries.size, refs, opened: this.opened };
  }

  /** A `ModelHost` session factory: the runner it returns shares the cached session. */
  readonly open = async (path: string, manifest: Manifest): Promise<InferenceRunner> => {
    const sha = manifest.artifact.sha256;
    let entry = this.entries.get(sha);
    if (!entry) {
      const session = ModelSession.create(path, manifest, this.options);
      entry = { session, refs: 0 };
      this.entries.set(sha, entry);
      this.opened++;
      // A failed load must not stay cached: the next device (or a retry) loads again.
      session.catch(() => {
        if (this.entries.get(sha)?.session === session) this.entries.delete(sha);
      });
    }
    entry.refs++;
    let session: ModelSession;
    try {
      session = await entry.session;
    } catch (err) {
      entry.refs--;
      throw err;
    }
    let released = false;
    return {
      inputSize: session.inputSize,
      classes: session.classes,
      run: (batch, n) => session.run(batch, n),
      runRaw: (batch, n) => session.runRaw(batch, n),
      dispose: async () => {
        if (released) return;
        released = true;
        await this.release(sha, entry);
      },
    };
  };

  /**
   * A real edge/runtime ModelHost whose sessions come from this cache. `faulty`: the device's outputs
   * are off by {@link FAULT_OFFSET} (a device whose hardware computes wrong results), so the host's real
   * self-test refuses every install with `self_test_failed`.
   */
  host(log: Logger = this.log, { faulty = false }: { faulty?: boolean } = {}): ModelHost {
    if (!faulty) return new ModelHost({ openSession: this.open, log });
    const skew = (out: Float32Array): Float32Array => out.map((v) => v + FAULT_OFFSET);
    return new ModelHost({
      log,
      openSession: async (path, manifest) => {
        const r = await this.open(path, manifest);
        return { ...r, run: async (b, n) => skew(await r.run(b, n)), runRaw: async (b, n) => skew(await r.runRaw(b, n)) };
      },
    });
  }

  private async release(sha: string, entry: { session: Promise<ModelSession>; refs: number }): Promise<void> {
    entry.refs--;
    if (entry.refs > 0) return;
    if (this.entries.get(sha) === entry) this.entries.delete(sha);
    const s = await entry.session.catch(() => undefined);
    await s?.dispose().catch((err: unknown) => this.log.warn({ err, sha256: sha }, 'sim/session-release-failed'));
  }
}
