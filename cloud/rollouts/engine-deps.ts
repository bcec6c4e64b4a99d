/** What the rollout engine (engine.ts) is built from: its dependencies and its timers. */
import type { Registry as PromRegistry } from 'prom-client';
import type { Logger } from '../../shared/log/index.js';
import type { FleetSignals } from '../fleet/ingest.js';
import type { ReleasePublisher } from '../fleet/publisher.js';
import type { StoreRegistry } from '../registry/open.js';

export interface Timers {
  setInterval(fn: () => void, ms: number): unknown;
  clearInterval(handle: unknown): void;
}

export interface RolloutEngineDeps {
  registry: StoreRegistry;
  publisher: ReleasePublisher;
  /**
   * Re-issues release `previousSeq`'s model under a new, higher sequence (devices never accept a
   * lower one), stores it as a releases row (same artifact, new signed manifest) and returns its seq.
   * Implemented by cloud/rounds, which holds the signing key.
   *
   * `registry`: the registry to write the row with. The engine re-issues only as the leader (a rollback, a
   * quarantine) and passes its leader view: on a cluster a fenced one (cluster/fenced-tx.ts), so a stale
   * leader's re-issue is refused and inserts no row after a takeover (issue 15 item 4).
   */
  reissue(previousSeq: number, registry: StoreRegistry): Promise<number>;
  /**
   * Re-issues agent release `agentSeq` at a higher agentSeq (cloud/agents/release.ts); agent rollbacks need it
   * (issue 14). `registry` as for `reissue`: the engine's leader view.
   */
  reissueAgent?(agentSeq: number, registry: StoreRegistry): Promise<number>;
  /** Ingest's signals: device events, statuses and telemetry trigger an evaluation at once. */
  signals?: FleetSignals;
  log?: Logger;
  now?: () => Date;
  /** Evaluation tick (soak timers, retries of failed steps); default 10 s. */
  tickSeconds?: number;
  timers?: Timers;
  newId?: () => string;
  /**
   * Canaries must have sent telemetry for the new release with health 'ok' before the fleet stage
   * (evidence, not only the absence of complaints). Default true.
   */
  requireTelemetry?: boolean;
  /** Desired publishes in flight at once; default 16. */
  concurrency?: number;
  /**
   * On start, publish again every retained desired state and needed artifact (the embedded aedes
   * keeps retained messages in memory only). Default true; a persistent broker may turn it off.
   */
  republishOnStart?: boolean;
  /** Prometheus registry for the engine's CPU and event counters (cloud/rollouts/meter.ts); a private one by default. */
  metrics?: PromRegistry;
  /**
   * Whether this replica acts on rollouts (issue 15: the cluster leader; always, without a cluster). On a
   * follower the API calls (create, pause, resume, abort, rollback, provisioning) only write the registry:
   * they publish nothing, and the leader's tick, which reads every active rollout from the registry, acts
   * on them within `tickSeconds`. Default: always.
   */
  leads?: () => boolean;
}
