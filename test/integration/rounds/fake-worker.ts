/**
 * Stand-in for cloud/rounds/worker.ts in runner tests: speaks the same IPC protocol but does no
 * training. `distillSettings.fake` picks the behaviour.
 */
import { Registry } from '../../../cloud/registry/db.js';
import { buildReleaseManifest } from '../../../cloud/rounds/manifest.js';
import { allocateReleaseSeq, insertRelease } from '../../../cloud/rounds/releases.js';
import { storeArtifact } from '../../../cloud/rounds/store.js';
import type { ParentMessage, RoundJob, WorkerMessage } from '../../../cloud/rounds/types.js';
import type { SignedManifest } from '../../../shared/protocol/schemas.js';
import { denseModel } from '../../fixtures/onnx-models.js';

const send = (m: WorkerMessage) => new Promise<void>((r) => process.send!(m, undefined, {}, () => r()));
const progress = (phase: 'train', epoch: number) => send({ type: 'progress', progress: { phase, epoch, epochs: 3, loss: 1 / epoch, samplesPerSec: 100, at: new Date().toISOString() } });

let onSigned: ((s: SignedManifest) => void) | undefined;

async function run(job: RoundJob): Promise<void> {
  const mode = (job.model.distillSettings as { fake?: string }).fake ?? 'release';
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
      const registry = Registry.open(job.dbPath);
      const m = denseModel({ sizes: [784, 10], seed: 3 });
      const seq = allocateReleaseSeq(registry);
      const manifest = buildReleaseManifest({
        model: job.model.name,
        seq,
        parentSeq: null,
        inputSpec: job.model.inputSpec as never,
        labels: job.model.labels as string[],
        teacherId: 'fake-teacher',
        artifact: m.bytes,
        quantization: 'fp32',
        chunkSize: 4096,
        metrics: { holdoutAccuracy: 0.9 },
        exampleCount: 0,
        roundId: job.roundId,
        createdAt: new Date(),
        validityDays: 30,
        selfTest: { input: new Float32Array(784), expected: m.forward(new Float32Array(784), 1), tolerance: 1e-4 },
      });
      const signed = await new Promise<SignedManifest>((resolve) => {
        onSigned = resolve;
        void send({ type: 'sign', requestId: 1, manifest });
      });
      const stored = await storeArtifact(job.dataDir, m.bytes);
      insertRelease(registry, { model: job.model.name, seq, sha256: stored.sha256, bytes: m.bytes.byteLength, quantization: 'fp32', metrics: { holdoutAccuracy: 0.9 }, manifest: signed.manifest, signature: signed.signature, parentSeq: null, roundId: job.roundId, artifactPath: stored.relPath });
      registry.dispose();
      if (mode === 'die-after-release') process.exit(9);
      await send({ type: 'done', outcome: { state: 'released', releaseSeq: seq, sha256: stored.sha256, artifactPath: stored.relPath, chunkSize: 4096, exampleCount: 0, metrics: { holdoutAccuracy: 0.9 } } });
      process.exit(0);
    }
  }
}

process.on('message', (msg: ParentMessage) => {
  if (msg.type === 'job') void run(msg.job);
  else if (msg.type === 'signed') onSigned?.(msg.signed);
});
process.on('disconnect', () => process.exit(3));
