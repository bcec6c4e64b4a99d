import { randomUUID } from 'node:crypto';
import { and, asc, desc, eq, inArray, isNull } from 'drizzle-orm';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import type { StoreRegistry } from '../registry/open.js';
import type { RoundRow } from '../registry/schema.js';
import { q } from '../registry/tx.js';
import { fencedRegistry } from '../cluster/fenced-tx.js';
import { cohortSummary, publishCohortLines } from './cohort-publish.js';
import { publishRelease, type PublishDeps } from './publish.js';
import { openArtifacts, type ArtifactBlobs } from '../artifacts/index.js';
import { parseRoundModel } from './settings.js';
import { RoundSigningGuard } from './sign-guard.js';
import { RoundFencing, type RoundsCluster } from './fencing.js';
import { recoverRounds } from './recovery.js';
import { failureReason, nowIso, registryLocation, superviseWorker, type ActiveRound } from './worker-process.js';
import {
  RoundConflictError,
  UnknownModelError,
  type ManifestSigner,
  type RoundJob,
  type RoundMetrics,
  type RoundProgress,
  type RoundsService,
  type RoundState,
  type RoundTrigger,
  type RoundView,
} from './types.js';

export interface RoundRunnerOptions {
  /** Goes into manifests as the HTTP source `${publicBaseUrl}/v1/artifacts/${sha256}`. */
  publicBaseUrl?: string;
  /** A round interrupted by a cloud restart is retried while its attempts are below this. Default 2. */
  maxAttempts?: number;
  /** Rounds training at the same time (across models); more wait `queued`. Default 1. */
  maxConcurrent?: number;
  backend?: RoundJob['backend'];
  /** Worker entry point; default cloud/rounds/worker.js (worker.ts + tsx when running from source). */
  workerPath?: string;
  workerExecArgv?: string[];
  /** Minimum interval between progress writes to the registry. Default 250 ms. */
  progressWriteMs?: number;
  /** Wall-clock limit of one round's worker; past it the worker is killed and the round `failed`. Default 2 h. */
  maxWallSeconds?: number;
}

/** registry + dataDir (artifacts/, cache/ live under it) + publish + rollouts, and the signer. */
export interface RoundRunnerDeps extends PublishDeps {
  signer: ManifestSigner;
  log?: Logger;
  options?: RoundRunnerOptions;
  /** A cluster replica's fence and name: the leader's round writes, claims, sequences and signatures are fenced on its epoch. */
  cluster?: RoundsCluster;
}

/**
 * Runs distillation rounds in child processes (worker.ts does steps 1–7), keeps `rounds` rows and
 * live progress, and does steps 8–9 (publish the artifact's retained chunks, start a rollout) in
 * this process, where MQTT lives. One round per model at a time; `maxConcurrent` across models.
 * Use `RoundRunner.create()` (it recovers rounds a previous process left behind) and `dispose()`.
 */
export class RoundRunner implements RoundsService {
  private readonly active = new Map<string, ActiveRound>();
  private readonly queue: string[] = [];
  /** Rounds taken off the queue whose worker is being started (launch reads the registry first). */
  private readonly launching = new Set<string>();
  /** Round row writes, in the order they were made (progress writes are not awaited by their caller). */
  private writes: Promise<unknown> = Promise.resolve();
  private readonly log: Logger;
  private stopping = false;
  /**
   * False on a cluster follower (issue 15): rounds are only queued in the registry, and the leader runs
   * them (`lead()` recovers them, then polls for rounds queued by another replica).
   */
  private leading = true;
  private pollTimer: NodeJS.Timeout | undefined;
  /** The epoch this runner leads under (0 and unfenced in one process); replaced at each `lead(epoch)`. */
  private fencing: RoundFencing;

  private readonly deps: RoundRunnerDeps & { blobs: ArtifactBlobs };

  private constructor(deps: RoundRunnerDeps) {
    this.log = deps.log ?? silentLogger;
    // The worker stores artifacts where openArtifacts says for its registry's dialect (worker.ts); this side
    // (signing guard, publish) must read them from the same place, so it defaults the same way.
    this.deps = { ...deps, blobs: deps.blobs ?? openArtifacts({ registry: deps.registry, dataDir: deps.dataDir, log: this.log }).blobs };
    this.fencing = new RoundFencing(deps.registry, 0, undefined, this.log);
  }

  /** Not running rounds: stopping, or a follower. */
  private get halted(): boolean {
    return this.stopping || !this.leading;
  }

  static async create(deps: RoundRunnerDeps): Promise<RoundRunner> {
    registryLocation(deps.registry);
    const runner = new RoundRunner(deps);
    await runner.recover();
    return runner;
  }

  /** A cluster replica's runner, not leading yet: it queues rounds in the registry until `lead()`. */
  static follower(deps: RoundRunnerDeps): RoundRunner {
    registryLocation(deps.registry);
    const runner = new RoundRunner(deps);
    runner.leading = false;
    return runner;
  }

  /**
   * Became the cluster leader under `epoch`: recovers the rounds left `queued` or `running` (a dead or
   * fenced leader's: failed and retried), then picks up rounds other replicas queue, every `pollQueuedMs`
   * (default 2 s). With `deps.cluster` every round write, claim, sequence and signature is fenced on `epoch`.
   */
  async lead(epoch: number, pollQueuedMs = 2000): Promise<void> {
    if (this.leading || this.stopping) return;
    this.fencing = new RoundFencing(this.deps.registry, epoch, this.deps.cluster, this.log);
    this.leading = true;
    await this.recover();
    this.pollTimer = setInterval(() => void this.pickUpQueued().catch((err: unknown) => this.log.warn({ err }, 'rounds/poll-queued failed')), pollQueuedMs);
    this.pollTimer.unref();
  }

  /** Stopped being leader: stops the workers (their rounds stay `running`: the next leader fails and retries them). */
  async follow(graceMs = 5000): Promise<void> {
    if (!this.leading) return;
    this.leading = false;
    clearInterval(this.pollTimer);
    this.pollTimer = undefined;
    await this.stopWorkers(graceMs);
  }

  private async pickUpQueued(): Promise<void> {
    if (this.halted) return;
    const { rounds } = this.deps.registry.t;
    const rows = await this.deps.registry.q.select({ id: rounds.id }).from(rounds).where(eq(rounds.state, 'queued')).orderBy(asc(rounds.createdAt));
    for (const { id } of rows) if (!this.queue.includes(id) && !this.launching.has(id) && !this.active.has(id)) this.queue.push(id);
    this.pump();
  }

  private get opts(): Required<Pick<RoundRunnerOptions, 'maxAttempts' | 'maxConcurrent' | 'progressWriteMs' | 'maxWallSeconds'>> & RoundRunnerOptions {
    return { maxAttempts: 2, maxConcurrent: 1, progressWriteMs: 250, maxWallSeconds: 7200, ...this.deps.options };
  }

  /** Queues a round for `model`; throws UnknownModelError, RoundConfigError or RoundConflictError. */
  async start(model: string, trigger: RoundTrigger): Promise<{ id: string }> {
    return this.enqueue(model, trigger, 0);
  }

  /**
   * `attempts` carries over from the round a retry replaces, so retries stop at maxAttempts. A retry is the
   * leader's write (fenced); a start through the API only queues, on any replica.
   */
  private async enqueue(model: string, trigger: RoundTrigger, carriedAttempts: number): Promise<{ id: string }> {
    if (this.stopping) throw new Error('round runner is stopping');
    const id = randomUUID();
    const createdAt = nowIso();
    const tx = trigger === 'retry' ? this.fencing.writer.tx.bind(this.fencing.writer, 'round.retry') : this.deps.registry.tx.bind(this.deps.registry);
    await tx(function* (tx, { models, rounds }) {
      const [row] = yield* q(tx.select().from(models).where(eq(models.name, model)).limit(1));
      if (!row) throw new UnknownModelError(model);
      parseRoundModel(row);
      const [busy] = yield* q(tx.select({ id: rounds.id }).from(rounds).where(and(eq(rounds.model, model), inArray(rounds.state, ['queued', 'running']))).limit(1));
      if (busy) throw new RoundConflictError(model, busy.id);
      yield* q(tx.insert(rounds).values({ id, model, state: 'queued', trigger, attempts: carriedAttempts, createdAt }));
    });
    if (this.halted) return { id }; // left `queued`: the next start (or the leader) picks it up
    this.log.info({ round: id, model, trigger }, 'round queued');
    this.queue.push(id);
    this.pump();
    return { id };
  }

  async get(id: string): Promise<RoundView | undefined> {
    const { rounds } = this.deps.registry.t;
    const [row] = await this.deps.registry.q.select().from(rounds).where(eq(rounds.id, id)).limit(1);
    return row ? this.view(row) : undefined;
  }

  async list(model?: string, limit = 50): Promise<RoundView[]> {
    const { rounds } = this.deps.registry.t;
    const rows = await this.deps.registry.q.select().from(rounds).where(model ? eq(rounds.model, model) : undefined).orderBy(desc(rounds.createdAt)).limit(limit);
    return rows.map((r) => this.view(r));
  }

  /** Pid of the worker training round `id`, if any (operations and tests). */
  workerPid(id: string): number | undefined {
    return this.active.get(id)?.child?.pid;
  }

  /** Resolves when round `id` has left `queued`/`running` in this process. */
  async settled(id: string): Promise<RoundView | undefined> {
    while (this.queue.includes(id) || this.launching.has(id)) await new Promise((r) => setTimeout(r, 20));
    await this.active.get(id)?.done;
    return this.get(id);
  }

  /**
   * Stops workers (SIGTERM, then SIGKILL after `graceMs`). Their rounds stay `running` in the
   * registry, so the next `create()` marks them failed and retries them.
   */
  async dispose(graceMs = 5000): Promise<void> {
    this.stopping = true;
    clearInterval(this.pollTimer);
    await this.stopWorkers(graceMs);
  }

  private async stopWorkers(graceMs: number): Promise<void> {
    this.queue.length = 0;
    const waits = [...this.active.values()].map(async (a) => {
      a.child?.kill('SIGTERM');
      const timer = setTimeout(() => a.child?.kill('SIGKILL'), graceMs);
      await a.done;
      clearTimeout(timer);
    });
    await Promise.all(waits);
    await this.writes;
  }

  private view(row: RoundRow): RoundView {
    const live = this.active.get(row.id);
    return {
      id: row.id,
      model: row.model,
      state: row.state as RoundState,
      trigger: row.trigger,
      progress: live?.progress ?? (row.progress as RoundProgress | null),
      metrics: row.metrics as RoundMetrics | null,
      error: row.error,
      releaseSeq: row.releaseSeq,
      exampleCount: row.exampleCount,
      attempts: row.attempts,
      startedAt: row.startedAt,
      finishedAt: row.finishedAt,
      createdAt: row.createdAt,
    };
  }

  /**
   * Writes a round row; writes go out one at a time, in call order, as the synchronous writes did. Fenced on
   * the epoch of `fencing` (the round's launch, or this runner's lead) on a cluster.
   */
  private update(id: string, set: Partial<RoundRow>, fencing = this.fencing): Promise<void> {
    const done = this.writes.then(() => fencing.update(id, set));
    this.writes = done.catch(() => {});
    return done.then(() => {});
  }

  private pump(): void {
    while (!this.halted && this.queue.length && this.active.size + this.launching.size < this.opts.maxConcurrent) {
      const id = this.queue.shift()!;
      this.launching.add(id);
      this.launch(id)
        .catch((err: Error) => this.log.error({ err, round: id }, 'rounds/launch failed'))
        .finally(() => {
          this.launching.delete(id);
          this.pump();
        });
    }
  }

  private setProgress(a: ActiveRound, p: Omit<RoundProgress, 'at'> & { at?: string }, force = false): void {
    const phaseChanged = p.phase !== a.progress.phase;
    a.progress = { ...p, at: p.at ?? nowIso() };
    const now = Date.now();
    if (force || phaseChanged || now - a.lastWrite >= this.opts.progressWriteMs) {
      a.lastWrite = now;
      this.update(a.id, { progress: a.progress }, a.fencing).catch((err: Error) => this.log.warn({ err, round: a.id }, 'rounds/progress write failed'));
    }
  }

  private async launch(id: string): Promise<void> {
    const { q: db, t } = this.deps.registry;
    const [row] = await db.select().from(t.rounds).where(eq(t.rounds.id, id)).limit(1);
    const [modelRow] = row ? await db.select().from(t.models).where(eq(t.models.name, row.model)).limit(1) : [];
    if (!row) return;
    const fencing = this.fencing;
    if (!modelRow) return this.update(id, { state: 'failed', error: `model ${row.model} no longer exists`, finishedAt: nowIso() }, fencing);
    if (this.halted || row.state !== 'queued') return; // left `queued` for the next start (or leader); or no longer queued
    // At most one round per model across the cluster: claim the model first (an older epoch's claim moves here).
    const claim = await fencing.claim(row.model, id);
    if (claim && !claim.claimed) {
      this.log.warn({ round: id, model: row.model, running: claim.running }, 'rounds: another round of this model holds the claim; left queued');
      return;
    }
    let resolveDone!: () => void;
    const guard = this.signingGuard({ id, model: row.model }, fencing, this.opts.publicBaseUrl);
    const a: ActiveRound = { id, model: row.model, guard, fencing, progress: { phase: 'starting', at: nowIso() }, lastWrite: Date.now(), stderr: '', done: new Promise((r) => (resolveDone = r)) };
    this.active.set(id, a);
    try {
      await this.update(id, { state: 'running', attempts: row.attempts + 1, startedAt: nowIso(), progress: a.progress, error: null }, fencing);
    } catch (err) {
      this.active.delete(id);
      resolveDone();
      throw err;
    }

    const epoch = fencing.jobEpoch;
    const job: RoundJob = { roundId: id, registry: registryLocation(this.deps.registry), dataDir: this.deps.dataDir, model: modelRow, publicBaseUrl: this.opts.publicBaseUrl, backend: this.opts.backend, ...(epoch !== undefined ? { epoch } : {}) };
    superviseWorker(a, job, {
      workerPath: this.opts.workerPath,
      workerExecArgv: this.opts.workerExecArgv,
      maxWallSeconds: this.opts.maxWallSeconds,
      log: this.log,
      onProgress: (p) => this.setProgress(a, p),
      onExit: (code, signal, spawnError) => {
        this.finish(a, code, signal, spawnError)
          // The round ended here (not left `running` for the next leader): free the model's claim.
          .then((ended) => (ended ? fencing.release(a.model, id) : undefined))
          .catch((err: Error) => this.log.error({ err, round: id }, 'rounds/finish failed'))
          .finally(() => {
            this.active.delete(id);
            resolveDone();
            this.pump();
          });
      },
    });
  }

  /** Records how the worker ended; false when the round is left `running` (stopping or stepped down) for the next start or leader. */
  private async finish(a: ActiveRound, code: number | null, signal: NodeJS.Signals | null, spawnError?: Error): Promise<boolean> {
    if (this.halted && !a.outcome) return false; // left `running`: recovered (failed + retried) at the next start
    const finishedAt = nowIso();
    const o = a.outcome;
    // A worker that died after inserting its release (before reporting) still produced a valid, signed release.
    const { releases } = this.deps.registry.t;
    const [orphan] = o ? [] : await this.deps.registry.q.select({ seq: releases.seq }).from(releases).where(and(eq(releases.roundId, a.id), isNull(releases.cohort))).limit(1);
    if (orphan) {
      this.log.warn({ round: a.id, release: orphan.seq, code, signal }, 'worker exited after storing its release');
      await this.completeRelease(a, orphan.seq);
      return true;
    }
    // Issue 13: the cohort lines' outcomes go in the round's metrics; their releases are published either way.
    const metrics = o?.cohorts ? { ...o.metrics, cohorts: o.cohorts.map(cohortSummary) } : o?.metrics;
    if (o?.state === 'rejected') {
      const cohortProblems = await publishCohortLines(this.deps, a.id, (phase, detail) => this.setProgress(a, { phase, detail }, true));
      this.setProgress(a, { phase: 'done', detail: 'rejected by the gate' }, true);
      await this.update(a.id, { state: 'rejected', error: [o.reason, ...cohortProblems].join('; '), metrics, exampleCount: o.exampleCount, finishedAt }, a.fencing);
      this.log.info({ round: a.id, reason: o.reason }, 'round rejected');
    } else if (o?.state === 'released') {
      await this.update(a.id, { releaseSeq: o.releaseSeq, metrics, exampleCount: o.exampleCount }, a.fencing);
      await this.completeRelease(a, o.releaseSeq);
    } else {
      const reason = failureReason(a, code, signal, spawnError, this.opts.maxWallSeconds);
      await this.update(a.id, { state: 'failed', error: reason, progress: a.progress, finishedAt }, a.fencing);
      this.log.warn({ round: a.id, reason }, 'round failed');
    }
    return true;
  }

  /** Steps 8–9 (publish.ts), then the round is `released`. */
  private async completeRelease(a: ActiveRound, seq: number): Promise<void> {
    const { q: db, t } = this.deps.registry;
    // Leader work (issue 15): the chunk flag is a fenced write, and the automatic rollout waits on the fence check.
    const deps = { ...this.deps, registry: fencedRegistry(this.deps.registry, a.fencing.writer, 'round.publish'), authorize: (action: string) => a.fencing.authorize(action) };
    const { release: rel, problems: baseProblems } = await publishRelease(deps, a.id, seq, (phase, detail) => this.setProgress(a, { phase, detail }, true));
    const problems = [...baseProblems, ...(await publishCohortLines(deps, a.id, (phase, detail) => this.setProgress(a, { phase, detail }, true)))];
    this.setProgress(a, { phase: 'done', detail: `release ${seq}` }, true);
    // The release exists and is signed: the round is released even if publishing must be retried.
    // After a recovery the round row may lack what the worker would have reported: take it from the release.
    const [row] = await db.select({ metrics: t.rounds.metrics }).from(t.rounds).where(eq(t.rounds.id, a.id)).limit(1);
    const fromRelease = row?.metrics ? {} : { metrics: rel.metrics, exampleCount: (rel.manifest as { lineage?: { exampleCount?: number } }).lineage?.exampleCount ?? null };
    await this.update(a.id, { state: 'released', releaseSeq: seq, error: problems.length ? problems.join('; ') : null, finishedAt: nowIso(), ...fromRelease }, a.fencing);
    this.log.info({ round: a.id, release: seq, problems }, 'round released');
  }

  /** A round's signing guard: its sequence allocated, and its signature given, only under `fencing`'s epoch. */
  private signingGuard(round: { id: string; model: string }, fencing: RoundFencing, publicBaseUrl?: string): RoundSigningGuard {
    const { registry, dataDir, blobs, signer } = this.deps;
    return new RoundSigningGuard(round, { registry, dataDir, blobs, signer, publicBaseUrl, allocateSeq: () => fencing.allocateSeq(), authorize: (action) => fencing.authorize(action) });
  }

  /** Recovers what a previous process (or leader) left behind (recovery.ts), under this runner's current epoch. */
  private async recover(): Promise<void> {
    const fencing = this.fencing;
    await recoverRounds({
      registry: this.deps.registry,
      fencing,
      maxAttempts: this.opts.maxAttempts,
      log: this.log,
      requeue: (id) => this.queue.push(id),
      resumePublish: (r, seq) => this.resumePublish(r, seq, fencing),
      update: (id, set) => this.update(id, set, fencing),
      retry: (model, attempts) => this.enqueue(model, 'retry', attempts),
    });
    this.pump();
  }

  /** A `running` round whose worker stored its release before the cloud died: steps 8–9 here, then its claim is freed. */
  private resumePublish(r: Pick<RoundRow, 'id' | 'model'>, seq: number, fencing: RoundFencing): void {
    // No worker here, so nothing ever asks this guard for a sequence or a signature.
    const a: ActiveRound = { id: r.id, model: r.model, guard: this.signingGuard(r, fencing), fencing, progress: { phase: 'publish', at: nowIso() }, lastWrite: 0, stderr: '', done: Promise.resolve() };
    this.active.set(r.id, a);
    a.done = this.completeRelease(a, seq)
      .then(() => fencing.release(r.model, r.id))
      .catch((err: Error) => this.log.error({ err, round: r.id }, 'rounds/recover failed'))
      .finally(() => {
        this.active.delete(r.id);
        this.pump();
      });
  }
}
