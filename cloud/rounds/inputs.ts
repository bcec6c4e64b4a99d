import { existsSync } from 'node:fs';
import { describeInput, mapDatasetFiles, ModelInputError, refSha, type InputFile, type InputSources } from '../artifacts/model-inputs.js';
import { ArtifactUnavailableError, type ArtifactBlobs } from '../artifacts/types.js';
import { createLogger, type Logger } from '../../shared/log/index.js';
import { RoundConfigError, type RoundModel } from './settings.js';

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

export async function resolveRoundInputs(model: RoundModel, blobs: ArtifactBlobs, log: Logger = defaultLog): Promise<RoundInputs> {
  const fail = (f: InputFile, message: string) => new RoundConfigError(`model ${model.name}: ${f.field}: ${message}`);
  const local = (sources: InputSources | undefined) => async (f: InputFile): Promise<string> => {
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
  const teacher = local(model.teacher.sources);
  const teacherFiles: string[] = [];
  for (const [i, text] of model.teacher.files.entries()) teacherFiles.push(await teacher({ field: `teacher.files[${i}]`, kind: 'teacher', text, directory: false }));
  const data = local(model.settings.sources);
  return {
    teacherFiles,
    teacherNames: model.teacher.files.map((f) => describeInput(f, model.teacher.sources)),
    baseData: await mapDatasetFiles(model.settings.baseData, 'distill.baseData', data),
    holdout: await mapDatasetFiles(model.settings.holdout, 'distill.holdout', data),
  };
}
