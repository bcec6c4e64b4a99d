import { stat } from 'node:fs/promises';
import type { Logger } from '../../shared/log/index.js';
import { artifactRef } from './refs.js';
import { SHA256_HEX, type ArtifactBlobs, type ArtifactKind } from './types.js';

/**
 * The files a model names (issue 15 item 2): its teacher's ONNX files and the files of its dataset specs
 * (`baseData`, `holdout`). Each is a path on some host's disk or an `artifact:SHA256` reference to the
 * artifact store. On PostgreSQL (registry store) registration imports every path into the store and keeps the
 * reference, with the original path in a `sources` map (sha256 → path) for logs and errors; a round on any
 * replica then resolves references to its own cached copy (cloud/rounds/inputs.ts).
 */

/** `sha256 → the path it was imported from`, kept beside the references (`teacher.sources`, `distill.sources`). */
export type InputSources = Record<string, string>;

/** One file a model names, where it is named, for errors (e.g. `teacher.files[0]`, `distill.baseData`). */
export interface InputFile {
  field: string;
  kind: ArtifactKind;
  /** A path, or `artifact:SHA256`. */
  text: string;
  /** True for `images:DIR` (a directory, which the store does not hold). */
  directory: boolean;
}

/** A model input that cannot be used: `field` names where it is (the API answers 400 with it). */
export class ModelInputError extends Error {
  override readonly name = 'ModelInputError';
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
  }
}

const REF = /^artifact:(.*)$/;

/** The sha256 of an `artifact:` reference, undefined for a path; throws ModelInputError for a malformed reference. */
export function refSha(file: Pick<InputFile, 'field' | 'text'>): string | undefined {
  const m = REF.exec(file.text);
  if (!m) return undefined;
  if (!SHA256_HEX.test(m[1]!)) throw new ModelInputError(file.field, `"${file.text}" is not artifact:SHA256 (64 lowercase hex digits)`);
  return m[1]!;
}

/**
 * Rebuilds a dataset spec with every file it names passed through `fn` (in order): `csv:FILE`,
 * `idx:IMAGES[,LABELS]`, `images:DIR`, inside `unlabeled:SPEC`. `mnist:` (packaged with the cloud) and
 * `split:` name no file and come back unchanged.
 */
export async function mapDatasetFiles(spec: string, field: string, fn: (f: InputFile) => Promise<string>): Promise<string> {
  const colon = spec.indexOf(':');
  const scheme = colon > 0 ? spec.slice(0, colon) : '';
  const rest = spec.slice(colon + 1);
  const file = (text: string, directory = false) => fn({ field, kind: 'dataset', text, directory });
  switch (scheme) {
    case 'unlabeled':
      return `unlabeled:${await mapDatasetFiles(rest, field, fn)}`;
    case 'csv':
      return `csv:${await file(rest)}`;
    case 'images':
      return `images:${await file(rest, true)}`;
    case 'idx': {
      const out: string[] = [];
      for (const part of rest.split(',')) out.push(await file(part));
      return `idx:${out.join(',')}`;
    }
    default:
      return spec;
  }
}

export interface ModelInputs {
  teacher: { files: string[]; sources?: InputSources };
  distill: { baseData: string; holdout?: string; sources?: InputSources };
}

export interface ImportedInput {
  field: string;
  path: string;
  sha256: string;
  bytes: number;
  /** False when the store already held the same bytes. */
  created: boolean;
}

/**
 * Registration on the registry store: every path the model names is stored in the artifact store and replaced
 * by its `artifact:` reference (original path kept in `sources`); every reference must name a stored blob.
 * Throws ModelInputError naming the field for a path that is not a readable file here, a directory
 * (`images:DIR`), or an unknown reference. Nothing about the content is checked: a teacher file that is not
 * ONNX fails the round that loads it, as a path would.
 */
export async function importModelInputs<M extends ModelInputs>(blobs: ArtifactBlobs, m: M, log: Logger): Promise<{ model: M; imported: ImportedInput[] }> {
  const imported: ImportedInput[] = [];
  const one = async (f: InputFile, sources: InputSources, old: InputSources | undefined): Promise<string> => {
    const sha = refSha(f);
    if (sha !== undefined) {
      if (!(await blobs.open(f.kind, sha))) throw new ModelInputError(f.field, `${f.text} is not in the artifact store (register the file by its path, which imports it)`);
      // A reference given back (e.g. a GET body PUT again) keeps the path it was imported from.
      if (old?.[sha] !== undefined) sources[sha] = old[sha];
      return f.text;
    }
    if (f.directory) {
      throw new ModelInputError(f.field, `${f.text} is a directory on one host's disk, which the artifact store does not hold and other replicas cannot read; with a PostgreSQL registry use csv:FILE or idx:FILES (imported at registration)`);
    }
    const st = await stat(f.text).catch((err: NodeJS.ErrnoException) => err);
    if (st instanceof Error) throw new ModelInputError(f.field, `${f.text} cannot be read on this replica (${st.code ?? st.message}); give a path this replica can read, or an artifact:SHA256 reference`);
    if (!st.isFile()) throw new ModelInputError(f.field, `${f.text} is not a file`);
    const put = await blobs.put(f.kind, { path: f.text }).catch((err: NodeJS.ErrnoException) => {
      // Found but not readable (permissions): the caller's problem, not the store's.
      if (typeof err.code === 'string' && err.code.startsWith('E') && err.syscall) throw new ModelInputError(f.field, `${f.text} cannot be read on this replica (${err.code})`);
      throw err;
    });
    imported.push({ field: f.field, path: f.text, sha256: put.sha256, bytes: put.bytes, created: put.created });
    log.info({ field: f.field, path: f.text, sha256: put.sha256, bytes: put.bytes, created: put.created }, 'artifacts: model input imported into the artifact store');
    sources[put.sha256] = f.text;
    return artifactRef(put.sha256);
  };

  const teacherSources: InputSources = {};
  const files: string[] = [];
  for (const [i, text] of m.teacher.files.entries()) files.push(await one({ field: `teacher.files[${i}]`, kind: 'teacher', text, directory: false }, teacherSources, m.teacher.sources));
  const dataSources: InputSources = {};
  const baseData = await mapDatasetFiles(m.distill.baseData, 'distill.baseData', (f) => one(f, dataSources, m.distill.sources));
  const holdout = m.distill.holdout === undefined ? undefined : await mapDatasetFiles(m.distill.holdout, 'distill.holdout', (f) => one(f, dataSources, m.distill.sources));
  const teacher: ModelInputs['teacher'] = { ...m.teacher, files, sources: teacherSources };
  const distill: ModelInputs['distill'] = { ...m.distill, baseData, ...(holdout !== undefined ? { holdout } : {}), sources: dataSources };
  // A sources map only when something has one (a model of paths only stays as it was stored).
  if (Object.keys(teacherSources).length === 0) delete teacher.sources;
  if (Object.keys(dataSources).length === 0) delete distill.sources;
  const model = { ...m, teacher, distill };
  return { model, imported };
}

/** How a file appears in logs and errors: its reference and the path it came from, when known. */
export function describeInput(text: string, sources: InputSources | undefined): string {
  const m = REF.exec(text);
  const from = m ? sources?.[m[1]!] : undefined;
  return from ? `${text} (from ${from})` : text;
}
