/**
 * Stand-in for cloud/rounds/worker.ts in runner tests: speaks the same IPC protocol but does no
 * training. `distillSettings.fake` picks the behaviour; with `waitBefore` ('sequence' | 'sign' | 'store')
 * and `gate` (a file) a releasing worker waits at that step until the file exists (a takeover meanwhile).
 */
import { existsSync } from 'node:fs';
import { openArtifacts } from '../../../cloud/artifacts/index.js';
import { openRegistry } from '../../../cloud/registry/open.js';
import { silentLogger } from '../../../shared/log/index.js';
import { buildReleaseManifest } from '../../../cloud/rounds/manifest.js';
import { releaseStore } from '../../../cloud/rounds/fenced-store.js';
import { storeArtifact } from '../../../cloud/rounds/store.js';
import type { ParentMessage, RoundJob, WorkerMessage } from '../../../cloud/rounds/types.js';
import type { Manifest, SignedManifest } from '../../../shared/protocol/schemas.js';
import { denseModel } from '../../fixtures/onnx-models.js';

const send = (m: WorkerMessage) => new Promise<void>((r) => process.send!(m, undefined, {}, () => r()));
const progress = (phase: 'train', epoch: number) => send({ type: 'progress', progress: { phase, epoch, epochs: 3, loss: 1 / epoch, samplesPerSec: 100, at: new Date().toISOString() } });

let nextId = 1;
const pending = new Map<number, (m: ParentMessage) => void>();
/** One request to the parent, answered by `sequence`, `signed` or `sign-failed` with the same id. */
function ask(msg: (requestId: number) => WorkerMessage): Promise<ParentMessage> {
  const requestId = nextId++;
  return new Promise((resolve) => {
    pending.set(requestId, resolve);
    void send(msg(requestId));
  });
}
const askSequence = async (cohort?: string): Promise<number> => {
  const r = await ask((requestId) => ({ type: 'sequence', requestId, ...(cohort ? { cohort } : {}) }));
  if (r.type !== 'sequence') throw new Error(`no sequence: ${JSON.stringify(r)}`);
  return r.seq;
};
const askSign = (manifest: Manifest) => ask((requestId) => ({ type: 'sign', requestId, manifest }));

async function run(job: RoundJob): Promise<void> {
  const settings = job.model.distillSettings as { fake?: string; waitBefore?: string; gate?: string };
  const mode = settings.fake ?? 'release';
  const hold = async (step: 'sequence' | 'sign' | 'store') => {
    if (settings.waitBefore !== step || !settings.gate) return;
    await progress('train', 2); // tells the test it is waiting
    while (!existsSync(settings.gate)) await new Promise((r) => setTimeout(r, 20));
  };
  await progress('train', 1);
  switch (mode) {
    case 'crash':
      process.stderr.write('fake worker: out of memory while training\n');
      process.exit(7);
    case 'error':
      await send({ type: 'error', message: 'baseData: mnist:nope is not a dataset' });
      process.exit(1);
    case 'hang':
      setInterval(() => void progress('train', 2), 50);
      return;
    case 'reject':
      await send({ type: 'done', outcome: { state: 'rejected', reason: 'holdout accuracy 0.5 < parent 0.9 − tolerance 0.01', exampleCount: 3, metrics: { holdoutAccuracy: 0.5 } } });
      process.exit(0);
    default: {
      // Where the runner says the registry is: the same PostgreSQL database or SQLite file (issue 15).
      const registry = await openRegistry(job.registry);
      const m = denseModel({ sizes: [784, 10], seed: 3 });
      // The protocol: store the artifact, ask the parent for the round's sequence, then for the signature.
      // Where the real worker stores it: the registry's artifact store on PostgreSQL, files on SQLite.
      const stored = await storeArtifact(job.dataDir, m.bytes, openArtifacts({ registry, dataDir: job.dataDir, log: silentLogger }).blobs);
      await hold('sequence');
      const seq = await askSequence();
      const build = (over: { model?: string; seq?: number; bytes?: Uint8Array; url?: string; cohort?: string } = {}): Manifest => buildReleaseManifest({
        model: over.model ?? job.model.name,
        seq: over.seq ?? seq,
        parentSeq: null,
        inputSpec: job.model.inputSpec as never,
        labels: job.model.labels as string[],
        teacherId: 'fake-teacher',
        artifact: over.bytes ?? m.bytes,
        quantization: 'fp32',
        chunkSize: 4096,
        metrics: { holdoutAccuracy: 0.9 },
        exampleCount: 0,
        roundId: job.roundId,
        cohort: over.cohort ?? null,
        createdAt: new Date(),
        validityDays: 30,
        selfTest: { input: new Float32Array(784), expected: m.forward(new Float32Array(784), 1), tolerance: 1e-4 },
        ...(over.url ? { publicBaseUrl: over.url } : job.publicBaseUrl ? { publicBaseUrl: job.publicBaseUrl } : {}),
      });
      if (mode === 'rogue') {
        // A compromised worker: every request but the honest one must be refused, and that one only once.
        const answer = async (manifest: Manifest | unknown) => {
          const r = await askSign(manifest as Manifest);
          return r.type === 'signed' ? 'signed' : r.type === 'sign-failed' ? r.message : r.type;
        };
        const results: Record<string, string> = {};
        results.secondSequence = String(await askSequence());
        results.firstSequence = String(seq);
        results.otherSequence = await answer(build({ seq: seq + 1 }));
        results.lowerSequence = await answer(build({ seq: Math.max(1, seq - 1) === seq ? seq + 7 : seq - 1 }));
        results.otherModel = await answer(build({ model: 'someone-else' }));
        results.unstoredBytes = await answer(build({ bytes: denseModel({ sizes: [784, 10], seed: 99 }).bytes }));
        results.foreignUrl = await answer(build({ url: 'https://attacker.example' }));
        results.notAManifest = await answer({ hello: 'world' });
        // Issue 13: a cohort line needs its own sequence, and a cohort the model has.
        results.cohortWithoutSequence = await answer(build({ cohort: 'nope' }));
        const cohortSeq = await askSequence('nope');
        results.cohortSequenceDiffers = String(cohortSeq !== seq);
        results.unknownCohort = await answer(build({ cohort: 'nope', seq: cohortSeq }));
        results.honest = await answer(build());
        results.twice = await answer(build());
        await registry.close();
        await send({ type: 'done', outcome: { state: 'rejected', reason: JSON.stringify(results), exampleCount: 0, metrics: {} } });
        process.exit(0);
      }
      await hold('sign');
      const signedMsg = await askSign(build());
      if (signedMsg.type !== 'signed') throw new Error(`not signed: ${signedMsg.type === 'sign-failed' ? signedMsg.message : signedMsg.type}`);
      const signed: SignedManifest = signedMsg.signed;
      await hold('store');
      // Stored as the real worker stores it: fenced on the job's epoch on a cluster (fenced-store.ts).
      await releaseStore(job, registry)({ model: job.model.name, seq, sha256: stored.sha256, bytes: m.bytes.byteLength, quantization: 'fp32', metrics: { holdoutAccuracy: 0.9 }, manifest: signed.manifest, signature: signed.signature, parentSeq: null, roundId: job.roundId, artifactPath: stored.relPath });
      await registry.close();
      if (mode === 'die-after-release') process.exit(9);
      await send({ type: 'done', outcome: { state: 'released', releaseSeq: seq, sha256: stored.sha256, artifactPath: stored.relPath, chunkSize: 4096, exampleCount: 0, metrics: { holdoutAccuracy: 0.9 } } });
      process.exit(0);
    }
  }
}

process.on('message', (msg: ParentMessage) => {
  if (msg.type === 'job') {
    run(msg.job).catch(async (err: Error) => {
      await send({ type: 'error', message: err.message });
      process.exit(1);
    });
  }
  else {
    const p = pending.get(msg.requestId);
    pending.delete(msg.requestId);
    p?.(msg);
  }
});
process.on('disconnect', () => process.exit(3));
