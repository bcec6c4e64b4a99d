import type { Manifest, SignedManifest } from '../../shared/protocol/schemas.js';
import { createLogger } from '../../shared/log/index.js';
import { openRegistry } from '../registry/open.js';
import { openArtifacts } from '../artifacts/index.js';
import { releaseStore } from './fenced-store.js';
import { runRound } from './round.js';
import type { ManifestSigner, ParentMessage, RoundJob, WorkerMessage } from './types.js';

/**
 * Round worker: a child process forked by RoundRunner, so that training (synchronous tfjs work for
 * minutes) never blocks the cloud's event loop. Protocol over the IPC channel (types.ts):
 *   parent → {job}                     once
 *   worker → {progress}*  {sign}*      the parent answers every sign with {signed} or {sign-failed}
 *   worker → {done} | {error}          then the worker exits
 * The signing key never enters this process: manifests are sent to the parent's key store to sign.
 * The worker opens its own registry where the cloud's is (job.registry: the same PostgreSQL URL, or the
 * same SQLite file, which WAL lets both processes use).
 */

const log = createLogger({ name: 'cloud/rounds/worker' });

function send(msg: WorkerMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.connected) return resolve();
    process.send!(msg, undefined, {}, () => resolve());
  });
}

/** Asks the parent for the round's sequence and for the one signature (the parent checks both). */
function remoteSigner(): ManifestSigner & { sequence(cohort: string | null): Promise<number>; settle(msg: ParentMessage): void } {
  let next = 1;
  const pending = new Map<number, { resolve(v: SignedManifest | number): void; reject(e: Error): void }>();
  const ask = <T extends SignedManifest | number>(msg: (requestId: number) => WorkerMessage): Promise<T> => {
    const requestId = next++;
    return new Promise<T>((resolve, reject) => {
      pending.set(requestId, { resolve: resolve as (v: SignedManifest | number) => void, reject });
      void send(msg(requestId));
    });
  };
  return {
    sign: (manifest: Manifest) => ask<SignedManifest>((requestId) => ({ type: 'sign', requestId, manifest })),
    sequence: (cohort) => ask<number>((requestId) => ({ type: 'sequence', requestId, ...(cohort !== null ? { cohort } : {}) })),
    settle(msg) {
      if (msg.type !== 'signed' && msg.type !== 'sign-failed' && msg.type !== 'sequence') return;
      const p = pending.get(msg.requestId);
      if (!p) return;
      pending.delete(msg.requestId);
      if (msg.type === 'signed') p.resolve(msg.signed);
      else if (msg.type === 'sequence') p.resolve(msg.seq);
      else p.reject(new Error(`signing failed: ${msg.message}`));
    },
  };
}

async function run(job: RoundJob, signer: ReturnType<typeof remoteSigner>): Promise<void> {
  // A worker runs one statement at a time: a small pool, so rounds do not eat PostgreSQL's connection slots.
  const registry = await openRegistry('url' in job.registry ? { url: job.registry.url, poolSize: 2, log } : job.registry);
  try {
    // Release artifacts where the cloud keeps them: the registry on PostgreSQL, files under the data dir on SQLite.
    const { blobs } = openArtifacts({ registry, dataDir: job.dataDir, log });
    const outcome = await runRound(job, {
      registry,
      blobs,
      signer,
      allocateSeq: (cohort) => signer.sequence(cohort),
      // On a cluster the release is stored only while the job's epoch is the leader's (fenced-store.ts).
      storeRelease: releaseStore(job, registry, log),
      onProgress: (p) => void send({ type: 'progress', progress: { ...p, at: new Date().toISOString() } }),
    });
    await send({ type: 'done', outcome });
  } finally {
    await registry.close();
  }
}

function main(): void {
  const signer = remoteSigner();
  let started = false;
  process.on('message', (msg: ParentMessage) => {
    if (msg.type === 'job' && !started) {
      started = true;
      log.info({ round: msg.job.roundId, model: msg.job.model.name }, 'round started');
      run(msg.job, signer).then(
        () => process.exit(0),
        async (err: Error) => {
          log.error({ err, round: msg.job.roundId }, 'round failed');
          await send({ type: 'error', message: err?.message ?? String(err), stack: err?.stack });
          process.exit(1);
        },
      );
    } else {
      signer.settle(msg);
    }
  });
  // The cloud went away: nobody is left to record the result, so stop burning CPU.
  process.on('disconnect', () => process.exit(3));
}

if (process.send) main();
