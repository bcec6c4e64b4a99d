/**
 * The release the edge benches serve: the shipped default student (`mlp:64`, int8) produced by a real
 * distillation round — the cloud's RoundRunner with its forked worker, a real registry file, a teacher
 * trained here — signed like any release. Cached under `.cache/bench/edge-release/` (the manifest, the
 * artifact and the throwaway bench signing key) and rebuilt when missing or near its expiry.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { releases } from '../../cloud/registry/schema.js';
import { RoundRunner } from '../../cloud/rounds/runner.js';
import { trainTeacher } from '../../cloud/teacher/train-teacher.js';
import { sha256Of, toTrustedKey, type SigningKey, type TrustedKey } from '../../shared/manifest/index.js';
import type { SignedManifest } from '../../shared/protocol/index.js';
import { FakePublisher, FakeRollouts, TestSigner, insertModel, openRegistry, tempDir } from '../unit/rounds/helpers.js';

export interface RealRelease {
  signed: SignedManifest;
  bytes: Buffer;
  key: SigningKey;
  trustedKeys: TrustedKey[];
  /** How it was made (for the results file). */
  round: { studentSpec: string; quantization: string; teacherArch: string; baseLimit: number; epochs: number; holdoutAccuracy: number | undefined; cached: boolean };
}

// Small on purpose: the bench measures serving, which depends on the student's architecture and
// quantization only, not on how well it was trained.
const TEACHER = { arch: 'mlp:128', limit: 5000, epochs: 1 };
const STUDENT = { baseData: 'mnist:train', baseLimit: 5000, holdout: 'mnist:test', holdoutLimit: 1000, epochs: 2, batchSize: 64, lr: 3e-3, temperature: 4, alpha: 0.9, tolerance: 0.05, latencyBudgetMs: 50, hardExampleShare: 0 };

export async function realRoundRelease(root: string, log: (m: string) => void = () => undefined): Promise<RealRelease> {
  const dir = join(root, '.cache/bench/edge-release');
  const files = { signed: join(dir, 'signed.json'), model: join(dir, 'model.onnx'), key: join(dir, 'key.json'), round: join(dir, 'round.json') };
  if (Object.values(files).every(existsSync)) {
    const signed = JSON.parse(await readFile(files.signed, 'utf8')) as SignedManifest;
    const bytes = await readFile(files.model);
    const fresh = Date.parse(signed.manifest.expiresAt) - Date.now() > 7 * 86_400_000;
    if (fresh && sha256Of(bytes) === signed.manifest.artifact.sha256) {
      const key = JSON.parse(await readFile(files.key, 'utf8')) as SigningKey;
      const round = { ...(JSON.parse(await readFile(files.round, 'utf8')) as RealRelease['round']), cached: true };
      return { signed, bytes, key, trustedKeys: [toTrustedKey(key)], round };
    }
  }
  log('building the bench release with a real round (teacher, distillation, int8 export); cached afterwards');
  const tmp = tempDir('apprentice-bench-round-');
  try {
    const teacherFile = join(tmp.dir, 'teacher.onnx');
    await trainTeacher({ data: 'mnist:train', limit: TEACHER.limit, arch: TEACHER.arch, dropout: 0, inputDropout: 0, epochs: TEACHER.epochs, batchSize: 64, learningRate: 3e-3, jitter: 0, seed: 7, out: teacherFile });
    const registry = openRegistry(tmp.dir);
    const signer = new TestSigner();
    await insertModel(registry, { teacherFile, studentSpec: 'mlp:64', distillSettings: STUDENT, schedule: null });
    const runner = await RoundRunner.create({ registry, dataDir: tmp.dir, signer, publish: new FakePublisher(), rollouts: new FakeRollouts() });
    try {
      const { id } = await runner.start('mnist', 'manual');
      const view = await runner.settled(id);
      if (view?.state !== 'released') throw new Error(`bench round ended ${view?.state}: ${view?.error}`);
      const rel = registry.db.select().from(releases).where(eq(releases.seq, view.releaseSeq!)).get()!;
      const signed = { manifest: rel.manifest, signature: rel.signature } as SignedManifest;
      const bytes = await readFile(join(tmp.dir, rel.artifactPath));
      const round = { studentSpec: 'mlp:64', quantization: rel.quantization, teacherArch: TEACHER.arch, baseLimit: STUDENT.baseLimit, epochs: STUDENT.epochs, holdoutAccuracy: signed.manifest.metrics.holdoutAccuracy, cached: false };
      await mkdir(dir, { recursive: true });
      await writeFile(files.signed, JSON.stringify(signed));
      await writeFile(files.model, bytes);
      await writeFile(files.key, JSON.stringify(signer.key));
      await writeFile(files.round, JSON.stringify(round));
      return { signed, bytes, key: signer.key, trustedKeys: signer.trusted, round };
    } finally {
      await runner.dispose();
      registry.dispose();
    }
  } finally {
    await rm(tmp.dir, { recursive: true, force: true });
  }
}
