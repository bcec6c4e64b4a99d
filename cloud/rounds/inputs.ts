import { existsSync } from 'node:fs';
import { describeInput, mapDatasetFiles, ModelInputError, refSha, type InputFile, type InputSources } from '../artifacts/model-inputs.js';
import { ArtifactUnavailableError, type ArtifactBlobs } from '../artifacts/types.js';
import { createLogger, type Logger } from '../../shared/log/index.js';
import { eq } from 'drizzle-orm';
import type { StoreRegistry } from '../registry/open.js';
import { Teacher } from '../teacher/ort-teacher.js';
import { parseRoundModel, RoundConfigError, type RoundModel } from './settings.js';

/**
 * Step 0 of a round (issue 15 item 2): the model's teacher files and dataset specs as local paths of the
 * replica running it. An `artifact:SHA256` reference becomes a verified copy in the data dir's cache
 * (cache/artifacts/SHA256 on the registry store; the file itself on the file store). A plain path is used as
 * it is: on SQLite (one process, one disk) that is the normal case; on PostgreSQL it only works on a host that
 * has the file, so it is logged, and a path this replica does not have fails the round naming the field.
 *
 * The teacher's logit cache (cache/teacher-logits) stays per replica: it is keyed by teacher and data content
 * and rebuilt on a replica that has none.
 */
export interface RoundInputs {
  /** Local paths, for onnxruntime. */
  teacherFiles: string[];
  /** How each teacher file is named in errors: its reference and the path it was imported from. */
  teacherNames: string[];
  /** The dataset specs with local paths. */
  baseData: string;
  holdout: string;
}

const defaultLog = createLogger({ name: 'cloud/rounds/inputs' });

/** One file of the model as a local path (see above); `sources` names where references came from. */
function localFile(model: RoundModel, blobs: ArtifactBlobs, log: Logger, sources: InputSources | undefined) {
  const fail = (f: InputFile, message: string) => new RoundConfigError(`model ${model.name}: ${f.field}: ${message}`);
  return async (f: InputFile): Promise<string> => {
    let sha: string | undefined;
    try {
      sha = refSha(f);
    } catch (err) {
      if (err instanceof ModelInputError) throw new RoundConfigError(`model ${model.name}: ${err.message}`);
      throw err;
    }
    if (sha !== undefined) {
      try {
        return await blobs.localPath(f.kind, sha);
      } catch (err) {
        if (!(err instanceof ArtifactUnavailableError)) throw err;
        throw fail(f, `${describeInput(f.text, sources)} cannot be read from the artifact store (${err.message}); register the model again (PUT /v1/models/${model.name}) from a host that has the file`);
      }
    }
    if (blobs.backend !== 'registry') return f.text;
    if (!existsSync(f.text)) {
      throw fail(f, `${f.text} is not on this replica's disk and is not in the artifact store; register the model again (PUT /v1/models/${model.name}) on a replica that can read it, which imports it so every replica can`);
    }
    log.warn({ model: model.name, field: f.field, path: f.text }, "rounds: a model input is a path read from this replica's disk; other replicas cannot run this model's rounds until it is registered again (PUT /v1/models/NAME imports it into the artifact store)");
    return f.text;
  };
}

/** The teacher's files as local paths, and how each is named in errors. */
export async function resolveTeacherInputs(model: RoundModel, blobs: ArtifactBlobs, log: Logger = defaultLog): Promise<Pick<RoundInputs, 'teacherFiles' | 'teacherNames'>> {
  const local = localFile(model, blobs, log, model.teacher.sources);
  const teacherFiles: string[] = [];
  for (const [i, text] of model.teacher.files.entries()) teacherFiles.push(await local({ field: `teacher.files[${i}]`, kind: 'teacher', text, directory: false }));
  return { teacherFiles, teacherNames: model.teacher.files.map((f) => describeInput(f, model.teacher.sources)) };
}

export async function resolveRoundInputs(model: RoundModel, blobs: ArtifactBlobs, log: Logger = defaultLog): Promise<RoundInputs> {
  const data = localFile(model, blobs, log, model.settings.sources);
  return {
    ...(await resolveTeacherInputs(model, blobs, log)),
    baseData: await mapDatasetFiles(model.settings.baseData, 'distill.baseData', data),
    holdout: await mapDatasetFiles(model.settings.holdout, 'distill.holdout', data),
  };
}

/**
 * The teacher a model's rounds use, opened on this replica with its references resolved: what the shadow
 * teacher gate labels disagreements with (its `teacherOf`, wired in cloud/server.ts), on either dialect.
 */
export async function openModelTeacher(registry: StoreRegistry, blobs: ArtifactBlobs, name: string, log: Logger = defaultLog) {
  const { models } = registry.t;
  const [row] = await registry.q.select().from(models).where(eq(models.name, name)).limit(1);
  if (!row) throw new Error(`model ${name} not found`);
  const m = parseRoundModel(row);
  const { teacherFiles, teacherNames } = await resolveTeacherInputs(m, blobs, log);
  const teacher = await Teacher.create(teacherFiles, { outputKind: m.teacher.outputKind, intraOpNumThreads: 1, names: teacherNames });
  return { teacher, inputSize: m.inputSpec.shape.reduce((a, b) => a * b, 1), classes: m.labels.length, studentImage: m.inputSpec.image, teacherImage: m.teacher.image };
}
